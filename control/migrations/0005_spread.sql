-- Standbys in other clouds than the primary, on request.
ALTER TABLE clusters ADD COLUMN spread_clouds BIGINT NOT NULL DEFAULT 0;
