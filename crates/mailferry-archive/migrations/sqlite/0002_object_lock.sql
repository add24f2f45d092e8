-- S3 Object Lock state per blob, as last applied (object_lock.rs): the retention date set on
-- the object (only ever extended) and whether a legal hold is ON. NULL / 0 on local disk.
ALTER TABLE blobs ADD COLUMN retain_until TEXT;
ALTER TABLE blobs ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
