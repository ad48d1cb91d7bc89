-- Several gateway instances sharing this store; see the SQLite migration of the same number.
ALTER TABLE delivered_submissions ADD COLUMN overdue_claimed_at timestamptz;

CREATE TABLE gateway_instances (
    id                text PRIMARY KEY,
    host              text NOT NULL,
    pid               int8 NOT NULL,
    version           text NOT NULL,
    started_at        timestamptz NOT NULL,
    seen_at           timestamptz NOT NULL,
    directory_version int8 NOT NULL,
    consumed          int8 NOT NULL,
    forwarded         int8 NOT NULL,
    rejected          int8 NOT NULL,
    in_flight         int8 NOT NULL
);
