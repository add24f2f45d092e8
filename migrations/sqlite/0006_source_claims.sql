-- One run per source mailbox at a time (DESIGN.md §2 invariant 8), for the CLI and the
-- service alike. A claim is a lease on `user@host:port` with a fencing token: `generation`
-- rises with every claim, never falls (released rows stay, with expires_at = '', which
-- sorts before every time), so a run bound to an older generation is recognisably stale.
CREATE TABLE source_claims (
    source_key  TEXT    PRIMARY KEY,
    -- Shown to whoever finds the mailbox busy: which process, where.
    holder      TEXT    NOT NULL,
    -- A run on the same host may take over at once from a holder whose pid is gone.
    holder_host TEXT    NOT NULL,
    holder_pid  INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    claimed_at  TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL
);

-- The claim a run holds: its ledger writes are refused once `claim_generation` is no
-- longer the mailbox's current one. NULL for runs made before this migration.
ALTER TABLE runs ADD COLUMN claim_key TEXT;
ALTER TABLE runs ADD COLUMN claim_generation INTEGER;

-- The size the server's LIST reported when the UIDL was first (or last) listed; `size`
-- becomes the retrieved size once known. A later LIST size that disagrees means the UIDL
-- now names other bytes (a server reusing UIDLs): never DELEd on the old copy's strength.
-- NULL for rows listed before this migration (no comparison is made for them).
ALTER TABLE ledger ADD COLUMN list_size INTEGER;
