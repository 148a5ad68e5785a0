-- What agents report of each member, for failover decisions.
ALTER TABLE instances ADD COLUMN in_recovery BIGINT;
ALTER TABLE instances ADD COLUMN lsn BIGINT;
ALTER TABLE instances ADD COLUMN streaming BIGINT;
ALTER TABLE instances ADD COLUMN sync_standbys TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN observed_term BIGINT NOT NULL DEFAULT 0;

-- Cluster events (failover started, promoted X, member replaced), newest last.
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX events_cluster ON events (cluster_id, at);
