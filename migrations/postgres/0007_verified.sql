-- Verified copies (issue 14, DESIGN.md §3): `verified` means the copy was read back from
-- the destination and matched at the recorded level. States become
-- listed → copying → copied → verified → source-deleted, or skipped / failed.
-- PostgreSQL flavour of migrations/sqlite/0007_verified.sql.
ALTER TABLE ledger DROP CONSTRAINT ledger_state_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_state_check CHECK (state IN
    ('listed', 'copying', 'copied', 'verified', 'source-deleted', 'skipped', 'failed'));

-- SHA-256 (hex) of the copy as read back from the destination, and the level it was
-- compared at: exact | body | size. NULL until read back. verify_error: why the last
-- read-back did not match (the row stays `copied`, never deleted).
ALTER TABLE ledger
    ADD COLUMN readback_digest TEXT,
    ADD COLUMN verify_level    TEXT,
    ADD COLUMN verified_at     TIMESTAMPTZ,
    ADD COLUMN verify_error    TEXT;
