-- Submissions that went out to a destination, kept for the deduplication window so that a
-- redelivered or republished submission is recognised. The gateway purges older rows.
--
-- Names are unqualified on purpose: the table lands in the first schema of the connection's
-- search_path (e.g. `?options=-csearch_path%3Dozg_gateway` in the URL), as does sqlx's
-- `_sqlx_migrations` bookkeeping table.
CREATE TABLE delivered_submissions (
    submission_id uuid PRIMARY KEY,
    fingerprint   bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    destination   text NOT NULL,
    delivered_at  timestamptz NOT NULL
);

-- For the purge, which deletes by age.
CREATE INDEX delivered_submissions_delivered_at ON delivered_submissions (delivered_at);
