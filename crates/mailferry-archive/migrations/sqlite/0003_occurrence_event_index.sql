-- The search index catches up by event sequence (commit order), not occurrence id.
CREATE INDEX occurrences_event ON occurrences (event_seq);
