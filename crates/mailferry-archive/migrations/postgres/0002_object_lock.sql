-- S3 Object Lock state per blob, as last applied (see ../sqlite/0002_object_lock.sql).
ALTER TABLE blobs ADD COLUMN retain_until TEXT;
ALTER TABLE blobs ADD COLUMN legal_hold BIGINT NOT NULL DEFAULT 0;
