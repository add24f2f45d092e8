-- The index of one archive, kept in `index.sqlite` beside the archive (not in the main
-- database): the archive is then self-contained — blobs + this file + the search index can
-- be copied, verified or handed to an auditor as a unit, and a single-mailbox CLI run needs
-- no server. Timestamps are RFC 3339 UTC text with milliseconds (`2024-05-01T12:00:00.000Z`),
-- always written in that one format so they sort and compare correctly as strings.
-- Booleans are INTEGER 0/1.

-- One row per distinct message (SHA-256 of its exact bytes). Purged blobs keep their row
-- (state 'purged') so every occurrence still points somewhere and verify can tell a purge
-- from a loss.
CREATE TABLE blobs (
    digest      TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL,           -- logical bytes
    stored_size INTEGER NOT NULL,           -- bytes in object storage (compressed, sealed)
    key_id      TEXT,                       -- sealing key id, NULL if unsealed
    stored_at   TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'stored' CHECK (state IN ('stored', 'purged'))
);

-- Every arrival, never merged away: the source mailbox is the only record of Bcc recipients.
-- A source mailbox is (source_host, account); a rerun of the same UIDL is idempotent.
CREATE TABLE occurrences (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    source_host  TEXT    NOT NULL,
    account      TEXT    NOT NULL,
    uidl         TEXT    NOT NULL,
    job_id       INTEGER,
    run_id       INTEGER,
    retrieved_at TEXT    NOT NULL,
    -- The retention clock starts here (Date headers are forgeable).
    ingested_at  TEXT    NOT NULL,
    digest       TEXT    NOT NULL REFERENCES blobs (digest),
    size         INTEGER NOT NULL,
    -- The ingest event that recorded this row (verify cross-checks both ways).
    event_seq    INTEGER NOT NULL,
    UNIQUE (source_host, account, uidl)
);
CREATE INDEX occurrences_digest ON occurrences (digest);
CREATE INDEX occurrences_run ON occurrences (job_id, run_id);
CREATE INDEX occurrences_account ON occurrences (account);

-- Parsed metadata for display (search runs on the tantivy index). Deleted on purge.
CREATE TABLE messages (
    digest           TEXT    PRIMARY KEY REFERENCES blobs (digest),
    meta             TEXT    NOT NULL,      -- JSON of MessageMeta
    subject          TEXT,
    message_id       TEXT,
    date             TEXT,
    has_attachment   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_message_id ON messages (message_id);

-- Append-only log; each record carries the SHA-256 of the previous one (chain.rs).
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,
    at        TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    detail    TEXT    NOT NULL,             -- JSON object
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- What purge left behind.
CREATE TABLE tombstones (
    digest    TEXT    PRIMARY KEY,
    size      INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    purged_by TEXT    NOT NULL,
    purged_at TEXT    NOT NULL,
    event_seq INTEGER NOT NULL
);

-- Legal holds. scope 'archive' (value ''), 'account' (value = account), or 'query'
-- (value = JSON SearchQuery, evaluated at purge time). Released holds stay for the record.
CREATE TABLE holds (
    id          INTEGER PRIMARY KEY,
    scope       TEXT    NOT NULL CHECK (scope IN ('archive', 'account', 'query')),
    value       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    placed_by   TEXT    NOT NULL,
    placed_at   TEXT    NOT NULL,
    released_by TEXT,
    released_at TEXT
);

-- The archive's retention policy (one row). NULL retention_days = keep forever.
CREATE TABLE policy (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    retention_days INTEGER,
    updated_at     TEXT    NOT NULL,
    updated_by     TEXT    NOT NULL
);
INSERT INTO policy (id, retention_days, updated_at, updated_by)
VALUES (1, NULL, '1970-01-01T00:00:00.000Z', 'default');
