-- Admin tokens limited to some Länder (scopes).
--
-- audit_log.actor_scope:     the scope of the token that acted, as the admin API describes
--                            it ("every Land", "Land 06 HE", …). Rows written before scopes
--                            existed were written by tokens for every Land.
-- audit_log.concerns_lands:  the Land codes the row concerns, each between spaces
--                            (" 06 16 "), or '*' for a change to what every Land shares (the
--                            services catalogue). '' (the rows written before): shown to
--                            tokens for every Land only.
-- audit_log.concerns_destinations: the destination ids the row concerns, the same way.
ALTER TABLE audit_log ADD COLUMN actor_scope TEXT NOT NULL DEFAULT 'every Land';
ALTER TABLE audit_log ADD COLUMN concerns_lands TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN concerns_destinations TEXT NOT NULL DEFAULT '';

-- A scoped listing of dead letters asks for the letters of some platforms or some
-- destinations; the platform has its index already.
CREATE INDEX dead_letters_destination ON dead_letters (destination, dead_lettered_at);
