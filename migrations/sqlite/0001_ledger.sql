-- The ledger: the truth about every source message mailferry has seen, and the jobs it
-- belongs to. SQLite flavour; the PostgreSQL twin is migrations/postgres/0001_ledger.sql.
-- Timestamps are RFC 3339 UTC text with milliseconds (`2024-05-01T12:00:00.000Z`), always
-- written by mailferry in that one format, so they sort and compare correctly as strings.
-- Booleans are INTEGER 0/1.

-- A batch is many jobs created together (CSV or JSON upload); its progress is the sum of
-- its jobs' ledgers, so it stores nothing but a name.
CREATE TABLE batches (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);

-- A job is one mailbox drain, source → target, and also a queue entry with a lease
-- (DESIGN.md §5). Jobs made by `mailferry migrate` have `cli_key` set and no `spec`;
-- jobs made by the API have a `spec` and no `cli_key`. Only jobs with a spec are ever
-- claimed by a worker.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    -- The CLI finds its job by this (source mailbox + target folder), so rerunning the same
    -- `mailferry migrate` continues the same ledger. NULL for service jobs (several API jobs
    -- may drain the same pair, e.g. a pre-stage and a delta batch).
    cli_key          TEXT    UNIQUE,
    -- Source mailbox + target folder, for display and reports; not unique.
    mailbox_key      TEXT    NOT NULL,
    -- Display forms (`pop3 user@host:port`, `imap user@host:port/folder`); never a secret.
    source           TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    -- `user@host:port` of the POP3 maildrop: POP3 locks a maildrop, so at most one job per
    -- source_key may hold a live lease.
    source_key       TEXT    NOT NULL,
    -- Lower-cased host names, for the per-host connection caps counted over live leases.
    -- target_host is '' for archive targets (no cap).
    source_host      TEXT    NOT NULL,
    target_host      TEXT    NOT NULL DEFAULT '',
    -- JSON of mailferry_model::JobSpec with its secrets already sealed (never plaintext).
    -- NULL for CLI jobs, which therefore are never claimable.
    spec             TEXT,
    -- JSON object of string labels (a copy of the spec's), filtered with json_each.
    labels           TEXT    NOT NULL DEFAULT '{}',
    batch_id         INTEGER REFERENCES batches (id),
    state            TEXT    NOT NULL CHECK (state IN
                        ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled', 'paused')),
    -- User asked a running job to stop / pause; the worker sees it on its next heartbeat.
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    pause_requested  INTEGER NOT NULL DEFAULT 0,
    -- The lease: which worker runs the job and until when. An expired lease on a running
    -- job makes it claimable again (the ledger makes the takeover exactly once).
    lease_owner      TEXT,
    lease_expires_at TEXT,
    -- A queued job handed back for a retry is not claimable before this time (backoff).
    not_before       TEXT,
    last_error       TEXT,
    -- Passes started: claims of a queued job (lease takeovers do not count).
    runs             INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
-- `GET /jobs?state=…` pages by id within a state; the claim finds running jobs here too.
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_batch ON jobs (batch_id, id);
CREATE INDEX jobs_source_key ON jobs (source_key, state);
-- The claim walks only claimable jobs in id order.
CREATE INDEX jobs_claimable ON jobs (id) WHERE spec IS NOT NULL AND state IN ('queued', 'running');

-- One pass of a job. The summary is kept as JSON for reports.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    dry_run     INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    -- succeeded | partial | failed | cancelled; NULL while running.
    outcome     TEXT,
    error       TEXT,
    summary     TEXT
);
CREATE INDEX runs_job ON runs (job_id);

-- One row per (job, UIDL). States: listed → copying → copied → source-deleted,
-- or skipped / failed. `copying` marks an APPEND whose outcome was never recorded:
-- the next run checks the destination before copying it again (exactly once).
-- The primary key (job_id, uidl) also serves the API's ledger pages (ordered by UIDL).
CREATE TABLE ledger (
    job_id               INTEGER NOT NULL REFERENCES jobs (id),
    uidl                 TEXT    NOT NULL,
    -- Size the server's LIST reported, then the retrieved size once known.
    size                 INTEGER NOT NULL,
    state                TEXT    NOT NULL CHECK (state IN
                            ('listed', 'copying', 'copied', 'source-deleted', 'skipped', 'failed')),
    -- SHA-256 (hex) of the exact retrieved bytes, after POP3 dot-unstuffing.
    digest               TEXT,
    -- SHA-256 and size of the bytes sent to the destination (after bare LF → CRLF).
    wire_digest          TEXT,
    wire_size            INTEGER,
    -- 1 when line endings had to be normalised for IMAP (DESIGN.md §2.3: recorded).
    normalized           INTEGER NOT NULL DEFAULT 0,
    message_id           TEXT,
    -- Destination UID and UIDVALIDITY from APPENDUID (RFC 4315), when offered.
    dest_uid             INTEGER,
    dest_uidvalidity     INTEGER,
    -- 1 when the copy was found already at the destination (an earlier, unrecorded
    -- APPEND) rather than appended by the run that recorded it.
    found_at_destination INTEGER NOT NULL DEFAULT 0,
    -- INTERNALDATE used (as sent to IMAP), and where it came from: received | date | retrieved.
    internal_date        TEXT,
    internal_date_source TEXT,
    -- Why a message was skipped, or the error that failed it.
    reason               TEXT,
    first_seen_run_id    INTEGER NOT NULL REFERENCES runs (id),
    last_run_id          INTEGER NOT NULL REFERENCES runs (id),
    copied_run_id        INTEGER REFERENCES runs (id),
    deleted_run_id       INTEGER REFERENCES runs (id),
    first_seen_at        TEXT    NOT NULL,
    copied_at            TEXT,
    deleted_at           TEXT,
    updated_at           TEXT    NOT NULL,
    PRIMARY KEY (job_id, uidl)
) WITHOUT ROWID;
CREATE INDEX ledger_job_state ON ledger (job_id, state);
