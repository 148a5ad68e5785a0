-- Durability in object storage: per-cluster durability mode and backup policy, the
-- restore a new cluster starts from, what primaries report of their archiving, tenant
-- data keys (wrapped by the master key) and the backup ledger (which outlives clusters).
ALTER TABLE clusters ADD COLUMN durability TEXT NOT NULL DEFAULT 'async';
ALTER TABLE clusters ADD COLUMN backup_interval BIGINT NOT NULL DEFAULT 86400;
ALTER TABLE clusters ADD COLUMN backup_retain_count BIGINT NOT NULL DEFAULT 7;
ALTER TABLE clusters ADD COLUMN backup_retain_days BIGINT NOT NULL DEFAULT 7;
ALTER TABLE clusters ADD COLUMN restore_json TEXT;
ALTER TABLE instances ADD COLUMN archived_lsn BIGINT;
ALTER TABLE instances ADD COLUMN archive_error TEXT;

CREATE TABLE org_keys (
    org_id     TEXT PRIMARY KEY REFERENCES orgs(id),
    wrapped    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE backups (
    id           TEXT PRIMARY KEY,
    cluster_id   TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    db_name      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    timeline     BIGINT,
    start_lsn    BIGINT,
    end_lsn      BIGINT,
    size_bytes   BIGINT,
    stored_bytes BIGINT,
    error        TEXT
);
CREATE INDEX backups_cluster ON backups (cluster_id, created_at);
CREATE INDEX backups_source ON backups (org_id, project_id, cluster_name);
