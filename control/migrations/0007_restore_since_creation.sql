-- A backup that is the cluster's creation image (its template plus all WAL since) can be
-- restored to any moment from `since` (the cluster's creation) on.
ALTER TABLE backups ADD COLUMN since BIGINT;
