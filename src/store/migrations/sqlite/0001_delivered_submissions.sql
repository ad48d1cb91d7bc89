-- Submissions that went out to a destination, kept for the deduplication window so that a
-- redelivered or republished submission is recognised. The gateway purges older rows.
--
-- submission_id: the UUID as lower-case hyphenated text, so that an operator can look one
--                up with the sqlite3 shell.
-- fingerprint:   SHA-256 of the message body (32 bytes).
-- delivered_at:  microseconds since the Unix epoch (UTC); SQLite has no timestamp type.
CREATE TABLE delivered_submissions (
    submission_id TEXT PRIMARY KEY NOT NULL,
    fingerprint   BLOB NOT NULL CHECK (length(fingerprint) = 32),
    destination   TEXT NOT NULL,
    delivered_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- For the purge, which deletes by age.
CREATE INDEX delivered_submissions_delivered_at ON delivered_submissions (delivered_at);
