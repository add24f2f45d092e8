-- Schedules and cutover (issue 17): a job with a schedule (in its spec) waits between its
-- delta passes in the new state `scheduled`, claimable once `not_before` (its next run)
-- has come; a cutover asks for one final pass with its own delete policy.

-- The CHECK on jobs.state must allow 'scheduled'. SQLite cannot alter a CHECK, and the
-- table rebuild it documents needs foreign keys off (ledger, runs, job_events and receipts
-- reference jobs), which a migration cannot do: sqlx runs each one in a transaction, where
-- PRAGMA foreign_keys is a no-op. A CHECK that accepts more changes nothing stored, so the
-- table's definition is edited in place, the procedure SQLite documents for such changes
-- (https://sqlite.org/lang_altertable.html#otheralter); RESET makes this connection read
-- the schema again (the DDL below bumps the schema version for the others).
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, '''cancelled'', ''paused'')', '''cancelled'', ''paused'', ''scheduled'')')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = RESET;
-- Fails the migration (and so rolls it back) unless the CHECK now names 'scheduled'.
CREATE TEMP TABLE check_0010 (edited INTEGER CHECK (edited = 1));
INSERT INTO check_0010 SELECT instr(sql, '''paused'', ''scheduled'')') > 0 FROM sqlite_master WHERE type = 'table' AND name = 'jobs';
DROP TABLE check_0010;

-- The delete policy (`keep`, `after-verified`, `after-days:N`) of the final pass a cutover
-- asked for; NULL: no cutover.
ALTER TABLE jobs ADD COLUMN cutover TEXT;
-- When that final pass started (set when it is claimed); NULL while it is still to come.
-- The batch report counts what was copied and deleted since.
ALTER TABLE jobs ADD COLUMN cutover_at TEXT;

-- The claim walks only claimable jobs in id order (scheduled ones too).
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (id)
    WHERE (spec IS NOT NULL OR task IS NOT NULL) AND state IN ('queued', 'running', 'scheduled');
