-- The audit log: one row per state-changing API call (POST, PUT, PATCH, DELETE) made with
-- a valid token, whatever its outcome (a 403 or 409 is recorded too). Read by admins at
-- `GET /api/v1/audit`. Request bodies are never recorded: they carry mailbox passwords.
-- Same conventions as 0001: RFC 3339 UTC text timestamps with milliseconds.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         TEXT    NOT NULL,
    -- Who: the token's id and name as they were at the time. No foreign key: the entry
    -- outlives the token (revoking a token must not rewrite history).
    token_id   INTEGER,
    token_name TEXT,
    -- What: the method, the route template (`/api/v1/jobs/{id}/cancel`), the resource the
    -- call was about (path parameters, or the id of what it created) and the HTTP status.
    method     TEXT    NOT NULL,
    route      TEXT    NOT NULL,
    target     TEXT,
    status     INTEGER NOT NULL,
    -- From where: the client's address (the socket peer, or X-Forwarded-For from a
    -- trusted proxy).
    client     TEXT
);
-- Pages are newest first by id; time ranges and token filters go through these.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_token ON audit_log (token_id, id);
