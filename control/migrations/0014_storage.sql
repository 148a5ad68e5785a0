-- What each instance's agent measured of its storage (issue 12, first step): data and WAL
-- bytes of the data directory and its disk's room. NULL until measured.
ALTER TABLE instances ADD COLUMN data_bytes BIGINT;
ALTER TABLE instances ADD COLUMN wal_bytes BIGINT;
ALTER TABLE instances ADD COLUMN disk_free_bytes BIGINT;
ALTER TABLE instances ADD COLUMN disk_total_bytes BIGINT;
