-- Periodic upkeep of the archive (today: the retention purge), done by one process at a
-- time however many serve/worker processes share the archive, and once per interval
-- between them: the process holding the lease (`holder`, until `lease_until`) runs it and
-- records when it last finished. Rows are claimed with an upsert (see retention.rs).
CREATE TABLE upkeep (
    task             TEXT PRIMARY KEY,
    holder           TEXT,
    lease_until      TEXT,
    last_finished_at TEXT
);
