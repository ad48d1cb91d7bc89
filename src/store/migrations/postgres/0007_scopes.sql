-- Admin tokens limited to some Länder (scopes); see the SQLite migration of the same number.
ALTER TABLE audit_log ADD COLUMN actor_scope text NOT NULL DEFAULT 'every Land';
ALTER TABLE audit_log ADD COLUMN concerns_lands text NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN concerns_destinations text NOT NULL DEFAULT '';

CREATE INDEX dead_letters_destination ON dead_letters (destination, dead_lettered_at);
