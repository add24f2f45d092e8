-- Signed migration receipts (issue 14): one per finished run, made by the engine when the
-- run ends. The header is the canonical JSON the Ed25519 signature covers; the entries
-- are the job's ledger rows as that run left them, each stored as the line served
-- (`{"leaf": …, …}`). A run that changed nothing (same Merkle root as the job's previous
-- receipt) points at that receipt's entries instead of storing them again.
-- Same text for PostgreSQL and SQLite.
CREATE TABLE receipts (
    run_id         BIGINT NOT NULL PRIMARY KEY REFERENCES runs (id),
    job_id         BIGINT NOT NULL REFERENCES jobs (id),
    entries_run_id BIGINT NOT NULL,
    header         TEXT   NOT NULL,
    signature      TEXT   NOT NULL,
    public_key     TEXT   NOT NULL
);
CREATE INDEX receipts_job ON receipts (job_id, run_id);

CREATE TABLE receipt_entries (
    run_id BIGINT NOT NULL,
    seq    BIGINT NOT NULL,
    line   TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
