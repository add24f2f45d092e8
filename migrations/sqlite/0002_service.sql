-- What the HTTP API adds: bearer tokens and idempotent POSTs (DESIGN.md §6).
-- Same conventions as 0001: RFC 3339 UTC text timestamps, INTEGER booleans.

-- API tokens. Only a hash of the token is stored: a leaked database does not leak working
-- credentials. Scopes are ordered read < write < admin.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    -- SHA-256 (hex) of the token; lookups on every request go through this index.
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   TEXT    NOT NULL,
    last_used_at TEXT
);

-- The first response to a POST carrying an `Idempotency-Key`, per token, so a retried
-- request gets the same answer instead of creating the jobs twice. `request_hash` (of
-- method + path + body) lets the API refuse the same key reused for another request.
-- No foreign key on token_id: the API may key requests made without a stored token (e.g.
-- a configured admin token) under a reserved id; deleting a token deletes its keys.
CREATE TABLE idempotency_keys (
    token_id     INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    -- For pruning old keys.
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (token_id, key)
);
