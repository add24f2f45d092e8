-- Job events: every state change of a job (and every cancel/pause request), in order.
-- Written by triggers in the same transaction as the change, so no code path can change a
-- job without leaving its event; `GET /jobs/{id}/events` streams them (SSE) and a client
-- that reconnects resumes from the last id it saw.
CREATE TABLE job_events (
    id     INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    at     TEXT    NOT NULL,
    state  TEXT    NOT NULL,
    -- The job's last_error on a state change, or 'cancel requested' / 'pause requested'.
    detail TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE TRIGGER job_events_created AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_events (job_id, at, state) VALUES (NEW.id, NEW.updated_at, NEW.state);
END;

CREATE TRIGGER job_events_changed AFTER UPDATE OF state, cancel_requested, pause_requested ON jobs
WHEN NEW.state IS NOT OLD.state
  OR NEW.cancel_requested > OLD.cancel_requested
  OR NEW.pause_requested > OLD.pause_requested
BEGIN
    INSERT INTO job_events (job_id, at, state, detail) VALUES (
        NEW.id, NEW.updated_at, NEW.state,
        CASE
            WHEN NEW.state IS NOT OLD.state THEN NEW.last_error
            WHEN NEW.cancel_requested > OLD.cancel_requested THEN 'cancel requested'
            ELSE 'pause requested'
        END);
END;
