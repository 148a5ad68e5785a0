-- Losing a whole cloud (issue 11): what a cluster whose every member was in a cloud that
-- went dark does — `restore` in a surviving cloud from the copy there, or `wait`.
ALTER TABLE clusters ADD COLUMN on_cloud_loss TEXT NOT NULL DEFAULT 'restore';
