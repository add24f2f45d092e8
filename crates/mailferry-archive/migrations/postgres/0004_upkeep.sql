-- Periodic upkeep of the archive (see ../sqlite/0005_upkeep.sql).
CREATE TABLE upkeep (
    task             TEXT PRIMARY KEY,
    holder           TEXT,
    lease_until      TEXT,
    last_finished_at TEXT
);
