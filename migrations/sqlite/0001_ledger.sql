-- The ledger: the truth about every source message mailferry has seen.
-- SQLite flavour; the PostgreSQL twin lives in migrations/postgres/ (service issue).
-- Timestamps are RFC 3339 UTC text so they sort and compare as strings.

-- A job is one mailbox drain, source → target. `mailbox_key` identifies the pair, so a
-- rerun of the same migration finds the same job and its ledger (incremental by UIDL).
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    mailbox_key TEXT    NOT NULL UNIQUE,
    -- Display forms (user@host:port); never a secret.
    source      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);

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
    -- INTERNALDATE used, and where it came from: received | date | retrieved.
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
