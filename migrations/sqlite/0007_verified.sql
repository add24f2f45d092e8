-- Verified copies (issue 14, DESIGN.md §3): `verified` means the copy was read back from
-- the destination and matched at the recorded level. States become
-- listed → copying → copied → verified → source-deleted, or skipped / failed.
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt with the same
-- rows (the migration runs in one transaction).
CREATE TABLE ledger_new (
    job_id               INTEGER NOT NULL REFERENCES jobs (id),
    uidl                 TEXT    NOT NULL,
    size                 INTEGER NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN
                            ('listed', 'copying', 'copied', 'verified', 'source-deleted', 'skipped', 'failed')),
    digest               TEXT,
    wire_digest          TEXT,
    wire_size            INTEGER,
    normalized           INTEGER NOT NULL DEFAULT 0,
    message_id           TEXT,
    dest_uid             INTEGER,
    dest_uidvalidity     INTEGER,
    found_at_destination INTEGER NOT NULL DEFAULT 0,
    internal_date        TEXT,
    internal_date_source TEXT,
    reason               TEXT,
    first_seen_run_id    INTEGER NOT NULL REFERENCES runs (id),
    last_run_id          INTEGER NOT NULL REFERENCES runs (id),
    copied_run_id        INTEGER REFERENCES runs (id),
    deleted_run_id       INTEGER REFERENCES runs (id),
    first_seen_at        TEXT    NOT NULL,
    copied_at            TEXT,
    deleted_at           TEXT,
    updated_at           TEXT    NOT NULL,
    list_size            INTEGER,
    -- SHA-256 (hex) of the copy as read back from the destination, and the level it was
    -- compared at: exact (every byte) | body (the body, headers rewritten by the
    -- destination) | size (the size only). NULL until read back.
    readback_digest      TEXT,
    verify_level         TEXT,
    verified_at          TEXT,
    -- Why the last read-back did not match (the row stays `copied`, never deleted).
    verify_error         TEXT,
    PRIMARY KEY (job_id, uidl)
) WITHOUT ROWID;

INSERT INTO ledger_new (job_id, uidl, size, state, digest, wire_digest, wire_size, normalized, message_id,
                        dest_uid, dest_uidvalidity, found_at_destination, internal_date, internal_date_source,
                        reason, first_seen_run_id, last_run_id, copied_run_id, deleted_run_id, first_seen_at,
                        copied_at, deleted_at, updated_at, list_size)
SELECT job_id, uidl, size, state, digest, wire_digest, wire_size, normalized, message_id,
       dest_uid, dest_uidvalidity, found_at_destination, internal_date, internal_date_source,
       reason, first_seen_run_id, last_run_id, copied_run_id, deleted_run_id, first_seen_at,
       copied_at, deleted_at, updated_at, list_size
FROM ledger;

DROP TABLE ledger;
ALTER TABLE ledger_new RENAME TO ledger;
CREATE INDEX ledger_job_state ON ledger (job_id, state);
