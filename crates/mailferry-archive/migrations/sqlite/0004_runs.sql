-- Verify and export runs started over the API, kept with the archive so their status and
-- results survive a restart and are visible to every API process (a run belongs to the
-- process that executes it; `heartbeat_at` tells a live run from an interrupted one).
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL CHECK (kind IN ('verify', 'export')),
    state        TEXT    NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    started_at   TEXT    NOT NULL,
    heartbeat_at TEXT    NOT NULL,
    finished_at  TEXT,
    done         INTEGER NOT NULL DEFAULT 0,
    total        INTEGER NOT NULL DEFAULT 0,
    file         TEXT,                      -- export file (on the disk of the process that wrote it)
    view         TEXT                       -- the finished run as the API shows it (JSON)
);
