-- Moves (issue 11). Where each standby's data directory came from: a base backup in object
-- storage or a copy of its primary, and where it began streaming (JSON of
-- `highrise_api::Seed`). A move's operation keeps the step it is at (JSON of
-- `planner::moves::Progress`) and where the cluster was before (JSON: cloud, region, plan,
-- term), so that it can be cancelled until the switchover. Each cloud has its own object
-- store: a cluster keeps its objects in its cloud's store and, with two copies, in a second
-- cloud's store too; the copier records how far behind the copy is.
ALTER TABLE instances ADD COLUMN seed_json TEXT;
ALTER TABLE operations ADD COLUMN progress_json TEXT;
ALTER TABLE operations ADD COLUMN undo_json TEXT;
ALTER TABLE clusters ADD COLUMN backup_copies BIGINT NOT NULL DEFAULT 1;
ALTER TABLE clusters ADD COLUMN copy_lag_bytes BIGINT;
ALTER TABLE clusters ADD COLUMN copied_at BIGINT;
