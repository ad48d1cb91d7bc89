-- What the admin API keeps: the routing directory entries managed through it (the
-- configuration file has its own, which are not stored), the audit log, dead letters taken
-- off the gateway's dead-letter queue, and the submission trace.
--
-- Times are microseconds since the Unix epoch (UTC), as in 0001; UUIDs are lower-case
-- hyphenated text. The store does no domain validation: strings are kept as given.

-- Destinations added through the admin API.
-- id:          what routes name; name: for people; kind, land: as in the configuration.
-- broker:      which configured broker the exchange is on.
-- exchange, routing_key: where submissions for this destination are published.
CREATE TABLE directory_destinations (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    land        TEXT NOT NULL,
    broker      TEXT NOT NULL,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL
) WITHOUT ROWID;

-- Routes added through the admin API: which destination serves a service in a region.
-- service:     service key (LeiKa) or selector, as the configuration writes it.
-- region:      ARS prefix.
-- destination: a destination id, from this table or from the configuration file, which is
--              why there is no foreign key.
CREATE TABLE directory_routes (
    service     TEXT NOT NULL,
    region      TEXT NOT NULL,
    destination TEXT NOT NULL,
    PRIMARY KEY (service, region)
) WITHOUT ROWID;

-- Services added through the admin API. key: the service key; name: for people.
CREATE TABLE directory_services (
    key  TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL
) WITHOUT ROWID;

-- One row: raised by every applied directory change, so that other instances notice one.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

-- Who did what through the admin API.
-- id:          AUTOINCREMENT so that an id is never reused, also after old rows are deleted.
-- at:          when the store wrote the row.
-- actor:       the authenticated caller.
-- action:      e.g. "directory.put_route", "dead_letter.replay".
-- object:      what it was done to.
-- before_json, after_json: JSON text of the object before and after, where that applies;
--              never payload.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object      TEXT NOT NULL,
    before_json TEXT,
    after_json  TEXT
);

-- For listing one actor's rows newest first, and for filtering by time.
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- Dead letters taken off the gateway's dead-letter queue. The body is personal data: rows
-- that left 'pending' are purged after a while.
-- id:                the dead letter's own id (not the submission's).
-- submission_id:     as the message carried it (may be invalid, hence text).
-- platform:          the platform the submission came from.
-- reason, field, detail: the rejection (outcome.rs); detail never holds payload.
-- service, ars, destination: what was known of the routing ('' when not known).
-- dead_lettered_at:  when the gateway dead-lettered it.
-- content_type, message_id, headers: the AMQP properties needed to publish it again;
--                    headers is a JSON object text.
-- body_bytes:        length of body, so that listing need not read the body.
-- stored_at:         when it was taken off the queue into this table.
-- state:             pending, replayed or discarded; only pending letters change.
-- state_changed_at, state_changed_by: when and by whom it left pending (NULL and '' before).
-- replays:           how often it was replayed.
-- body:              the message body, byte for byte. Last, so that reading the other
--                    columns does not walk its overflow pages; and a rowid table rather than
--                    WITHOUT ROWID, which suits large rows badly.
CREATE TABLE dead_letters (
    id               TEXT PRIMARY KEY NOT NULL,
    submission_id    TEXT NOT NULL,
    platform         TEXT NOT NULL,
    reason           TEXT NOT NULL,
    field            TEXT NOT NULL,
    detail           TEXT NOT NULL,
    service          TEXT NOT NULL,
    ars              TEXT NOT NULL,
    destination      TEXT NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    content_type     TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    headers          TEXT NOT NULL,
    body_bytes       INTEGER NOT NULL CHECK (body_bytes >= 0),
    stored_at        INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'replayed', 'discarded')),
    state_changed_at INTEGER,
    state_changed_by TEXT NOT NULL DEFAULT '',
    replays          INTEGER NOT NULL DEFAULT 0 CHECK (replays >= 0),
    body             BLOB NOT NULL
);

-- Listing pages through (dead_lettered_at, id); the filters most used have their own; the
-- state index also serves the purge (state, state_changed_at).
CREATE INDEX dead_letters_dead_lettered_at ON dead_letters (dead_lettered_at, id);
CREATE INDEX dead_letters_platform ON dead_letters (platform, dead_lettered_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, dead_lettered_at);
CREATE INDEX dead_letters_state ON dead_letters (state, state_changed_at);
CREATE INDEX dead_letters_submission_id ON dead_letters (submission_id);

-- What happened to each submission, for an operator's trace; purged by age.
-- seq:           insertion order, which orders events with the same time.
-- submission_id: as received (may be invalid, hence text).
-- at:            when it happened.
-- event:         "received", "forwarded", "duplicate", "retrying", "dead-lettered", …
-- platform, destination, detail: context ('' when none); detail never holds payload.
CREATE TABLE trace_events (
    seq           INTEGER PRIMARY KEY,
    submission_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    event         TEXT NOT NULL,
    platform      TEXT NOT NULL,
    destination   TEXT NOT NULL,
    detail        TEXT NOT NULL
);

-- The trace of one submission in order, and the purge by age.
CREATE INDEX trace_events_submission ON trace_events (submission_id, at, seq);
CREATE INDEX trace_events_at ON trace_events (at);
