-- When a submission was taken off its platform's queue, for the delivery whose trace lives on
-- this row: the first delivery of a submission from its platform writes no trace events; its
-- "received" (at received_at) and "forwarded" (at delivered_at) events are read from here.
-- NULL for deliveries of retries and replays, whose events are in trace_events.
-- Microseconds since the Unix epoch (UTC).
ALTER TABLE delivered_submissions ADD COLUMN received_at INTEGER;
