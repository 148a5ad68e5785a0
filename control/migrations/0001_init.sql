-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are Unix seconds; flags
-- are BIGINT 0/1 (the sqlx Any driver has no portable boolean).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE orgs (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    operator   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE clusters (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id),
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    cloud       TEXT NOT NULL,
    region      TEXT NOT NULL,
    plan        TEXT NOT NULL,
    pg_version  BIGINT NOT NULL,
    replicas    BIGINT NOT NULL,
    spot        BIGINT NOT NULL,
    endpoint    TEXT NOT NULL UNIQUE,
    db_name     TEXT NOT NULL,
    owner_name  TEXT NOT NULL,
    owner_scram TEXT NOT NULL,
    term        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE UNIQUE INDEX clusters_live_name ON clusters (project_id, name) WHERE deleted_at IS NULL;

CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    cloud          TEXT NOT NULL,
    region         TEXT NOT NULL,
    zone           TEXT NOT NULL DEFAULT '',
    market         TEXT NOT NULL,
    address        TEXT,
    status         TEXT NOT NULL,
    token_hash     TEXT,
    last_heartbeat BIGINT,
    launched_at    BIGINT NOT NULL
);

CREATE TABLE instances (
    id         TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL,
    host_id    TEXT NOT NULL REFERENCES hosts(id),
    slots      BIGINT NOT NULL,
    role       TEXT NOT NULL,
    deleting   BIGINT NOT NULL DEFAULT 0,
    observed   TEXT NOT NULL DEFAULT 'unknown',
    addr       TEXT,
    error      TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX instances_host ON instances (host_id);

CREATE TABLE operations (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL,
    cluster_id TEXT,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX operations_open ON operations (status);
