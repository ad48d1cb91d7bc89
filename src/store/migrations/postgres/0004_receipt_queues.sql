-- Destinations created through the admin API may name the queue their back office sends
-- receipts to ('' = none), as the configuration file's may.
ALTER TABLE directory_destinations ADD COLUMN receipt_queue text NOT NULL DEFAULT '';
