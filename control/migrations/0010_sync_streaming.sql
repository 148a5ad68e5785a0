-- What a primary's PostgreSQL counts toward its synchronous commits right now (standbys
-- caught up and streaming), as opposed to what its configuration names: a standby leaving
-- for a spot notice goes only once its replacement is among them, so commits never wait.
ALTER TABLE instances ADD COLUMN sync_streaming TEXT NOT NULL DEFAULT '';
