-- Moves (issue 11). Where each standby's data directory came from: a base backup in object
-- storage or a copy of its primary, and where it began streaming (JSON of
-- `highrise_api::Seed`). A move's operation keeps the step it is at (JSON of
-- `planner::moves::Progress`) and where the cluster was before (JSON: cloud, region, plan,
-- term), so that it can be cancelled until the switchover.
ALTER TABLE instances ADD COLUMN seed_json TEXT;
ALTER TABLE operations ADD COLUMN progress_json TEXT;
ALTER TABLE operations ADD COLUMN undo_json TEXT;
