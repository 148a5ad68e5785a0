-- What each host's agent last read of its own disk (issue 12): size, free room, the reserve it
-- holds and whether that reserve is released. NULL for hosts on a shared file system.
ALTER TABLE hosts ADD COLUMN disk_total_bytes BIGINT;
ALTER TABLE hosts ADD COLUMN disk_free_bytes BIGINT;
ALTER TABLE hosts ADD COLUMN disk_reserve_bytes BIGINT;
ALTER TABLE hosts ADD COLUMN disk_reserve_released BIGINT;
