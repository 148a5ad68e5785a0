-- What each member's running server allows (`max_connections`): a new standby must allow
-- at least as many as its primary, also after a resize down (issue 11).
ALTER TABLE instances ADD COLUMN max_connections BIGINT;
