-- Several gateway instances sharing this store.
--
-- overdue_claimed_at: when an instance took the submission to report it overdue; another
--                     instance passes it over until the claim is older than the lease, so
--                     that a platform hears "overdue" once, and still hears it when the
--                     claiming instance died before reporting. Microseconds since the epoch.
ALTER TABLE delivered_submissions ADD COLUMN overdue_claimed_at INTEGER;

-- One row per running (or recently stopped) instance, written by its heartbeat: the admin
-- API of every instance lists them all with their counters. Times in microseconds since the
-- epoch; counters since the instance started.
CREATE TABLE gateway_instances (
    id                TEXT PRIMARY KEY,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    version           TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    seen_at           INTEGER NOT NULL,
    directory_version INTEGER NOT NULL,
    consumed          INTEGER NOT NULL,
    forwarded         INTEGER NOT NULL,
    rejected          INTEGER NOT NULL,
    in_flight         INTEGER NOT NULL
);
