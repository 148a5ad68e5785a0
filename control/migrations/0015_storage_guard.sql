-- The storage guard (issue 12): the level each instance's agent applies and the disk room
-- it holds back; per cluster, the level last announced to the tenant (an event per change).
ALTER TABLE instances ADD COLUMN disk_reserve_bytes BIGINT;
ALTER TABLE instances ADD COLUMN storage_level TEXT;
ALTER TABLE clusters ADD COLUMN storage_level TEXT NOT NULL DEFAULT 'normal';
