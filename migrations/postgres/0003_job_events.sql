-- Job events: every state change of a job (and every cancel/pause request), in order.
-- Written by a trigger in the same transaction as the change, so no code path can change a
-- job without leaving its event; `GET /jobs/{id}/events` streams them (SSE) and a client
-- that reconnects resumes from the last id it saw.
CREATE TABLE job_events (
    id     BIGSERIAL   PRIMARY KEY,
    job_id BIGINT      NOT NULL REFERENCES jobs (id),
    at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    state  TEXT        NOT NULL,
    -- The job's last_error on a state change, or 'cancel requested' / 'pause requested'.
    detail TEXT
);
CREATE INDEX job_events_job ON job_events (job_id, id);

CREATE FUNCTION mailferry_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (job_id, state) VALUES (NEW.id, NEW.state);
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO job_events (job_id, state, detail) VALUES (NEW.id, NEW.state, NEW.last_error);
    ELSIF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        INSERT INTO job_events (job_id, state, detail) VALUES (NEW.id, NEW.state, 'cancel requested');
    ELSIF NEW.pause_requested AND NOT OLD.pause_requested THEN
        INSERT INTO job_events (job_id, state, detail) VALUES (NEW.id, NEW.state, 'pause requested');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER job_events AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION mailferry_job_event();
