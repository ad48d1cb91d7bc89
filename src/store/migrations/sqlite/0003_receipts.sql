-- Each delivered submission's answer from its back office (receipts), kept beside the
-- deduplication record: the row says where the submission went, which is what a receipt is
-- checked against. Rows are kept for the longer of the deduplication window and the receipt
-- retention.
--
-- platform:            the origin platform, whom the answer is reported to.
-- answer:              NULL until a receipt came; 'accepted', 'rejected' or 'forwarded-onward'.
-- answer_digest:       SHA-256 of the answer (kind and problems): the same receipt again is a
--                      duplicate, a different one after a final answer is refused.
-- answered_at:         microseconds since the Unix epoch.
-- overdue_reported_at: when the platform was told that no answer came in time.
ALTER TABLE delivered_submissions ADD COLUMN platform TEXT NOT NULL DEFAULT '';
ALTER TABLE delivered_submissions ADD COLUMN answer TEXT;
ALTER TABLE delivered_submissions ADD COLUMN answer_digest BLOB;
ALTER TABLE delivered_submissions ADD COLUMN answered_at INTEGER;
ALTER TABLE delivered_submissions ADD COLUMN overdue_reported_at INTEGER;
