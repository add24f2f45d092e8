-- Schedules and cutover (issue 17): a job with a schedule (in its spec) waits between its
-- delta passes in the new state `scheduled`, claimable once `not_before` (its next run)
-- has come; a cutover asks for one final pass with its own delete policy.

-- 0001's inline CHECK got PostgreSQL's default name.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('queued', 'running', 'succeeded', 'partial', 'failed', 'cancelled', 'paused', 'scheduled'));

-- The delete policy (`keep`, `after-verified`, `after-days:N`) of the final pass a cutover
-- asked for; NULL: no cutover.
ALTER TABLE jobs ADD COLUMN cutover TEXT;
-- When that final pass started (set when it is claimed); NULL while it is still to come.
-- The batch report counts what was copied and deleted since.
ALTER TABLE jobs ADD COLUMN cutover_at TIMESTAMPTZ;

-- The claim walks only claimable jobs in id order (scheduled ones too).
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (id)
    WHERE (spec IS NOT NULL OR task IS NOT NULL) AND state IN ('queued', 'running', 'scheduled');
