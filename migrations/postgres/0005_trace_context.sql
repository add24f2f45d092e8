-- Distributed tracing: the W3C trace context (`traceparent`, W3C Trace Context §3.2) of
-- the API request that created the job, so the job's spans continue that trace on
-- whichever worker process runs it. NULL for jobs made without one (`mailferry migrate`,
-- jobs older than this migration, requests seen while tracing was off and no header came).
-- Holds only ids and flags, never anything from the request itself.
-- PostgreSQL flavour of migrations/sqlite/0005_trace_context.sql.
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
