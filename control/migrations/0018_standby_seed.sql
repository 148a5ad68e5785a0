-- Where each standby's data directory came from (issue 11): a base backup in object storage
-- or a copy of its primary, and where it began streaming (JSON of `highrise_api::Seed`).
ALTER TABLE instances ADD COLUMN seed_json TEXT;
