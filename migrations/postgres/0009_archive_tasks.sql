-- Archive verify and export runs are jobs too (issue 15: one job system): queued by the
-- API, claimed by workers under the same leases. `task` holds mailferry_model::ArchiveTask
-- as JSON; such jobs have no spec. `source_key` (= mailbox_key) is unique per run, and
-- `source_host` is `archive:<name>`, so the per-host cap also bounds one archive's runs.
ALTER TABLE jobs ADD COLUMN task TEXT;
DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (id) WHERE (spec IS NOT NULL OR task IS NOT NULL) AND state IN ('queued', 'running');
-- An archive's active runs (the API's per-archive limit) and a run's job.
CREATE INDEX jobs_tasks ON jobs (source_host, state) WHERE task IS NOT NULL;
CREATE INDEX jobs_mailbox_key ON jobs (mailbox_key) WHERE task IS NOT NULL;
