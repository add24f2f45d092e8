-- One run per source mailbox at a time (DESIGN.md §2 invariant 8), for the CLI and the
-- service alike. A claim is a lease on `user@host:port` with a fencing token: `generation`
-- rises with every claim, never falls (released rows stay, with expires_at = '-infinity'),
-- so a run bound to an older generation is recognisably stale.
-- PostgreSQL flavour of migrations/sqlite/0006_source_claims.sql.
CREATE TABLE source_claims (
    source_key  TEXT        PRIMARY KEY,
    -- Shown to whoever finds the mailbox busy: which process, where.
    holder      TEXT        NOT NULL,
    -- A run on the same host may take over at once from a holder whose pid is gone.
    holder_host TEXT        NOT NULL,
    holder_pid  BIGINT      NOT NULL,
    generation  BIGINT      NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- The claim a run holds: its ledger writes are refused once `claim_generation` is no
-- longer the mailbox's current one. NULL for runs made before this migration.
ALTER TABLE runs ADD COLUMN claim_key TEXT, ADD COLUMN claim_generation BIGINT;

-- The size the server's LIST reported when the UIDL was last listed (`size` becomes the
-- retrieved size once known): a later LIST size that disagrees means the UIDL now names
-- other bytes. NULL for rows listed before this migration (no comparison for them).
ALTER TABLE ledger ADD COLUMN list_size BIGINT;
