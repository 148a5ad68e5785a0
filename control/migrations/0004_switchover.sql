-- Planned switchover: the requested target, and the primary being drained for it.
ALTER TABLE clusters ADD COLUMN switchover_to TEXT;
ALTER TABLE instances ADD COLUMN draining BIGINT NOT NULL DEFAULT 0;
