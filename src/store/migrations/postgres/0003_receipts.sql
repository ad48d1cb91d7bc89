-- Each delivered submission's answer from its back office (receipts); see the SQLite
-- migration of the same number for the columns.
ALTER TABLE delivered_submissions
    ADD COLUMN platform text NOT NULL DEFAULT '',
    ADD COLUMN answer text,
    ADD COLUMN answer_digest bytea,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN overdue_reported_at timestamptz;
