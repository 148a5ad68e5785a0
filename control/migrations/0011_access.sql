-- Who may do what. Keys carry a role, may be limited to one project and may expire; a
-- session is a key bound to a user, whose role follows the user's membership. Keys made
-- before roles existed could do everything, so they are owners.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'owner';
ALTER TABLE api_keys ADD COLUMN project_id TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN user_id TEXT;
ALTER TABLE api_keys ADD COLUMN created_by TEXT;
CREATE INDEX api_keys_org ON api_keys (org_id, created_at);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    -- Argon2id in PHC string form; NULL until the first invitation is accepted.
    password_hash TEXT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE members (
    org_id            TEXT NOT NULL REFERENCES orgs(id),
    user_id           TEXT NOT NULL REFERENCES users(id),
    role              TEXT NOT NULL,
    -- SHA-256 of the invitation's secret, until it is accepted.
    invite_hash       TEXT,
    invite_expires_at BIGINT,
    created_at        BIGINT NOT NULL,
    joined_at         BIGINT,
    PRIMARY KEY (org_id, user_id)
);

-- One hash chain per org: entry `seq` covers its fields and entry `seq - 1`'s hash.
CREATE TABLE audit_log (
    org_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    at_ms  BIGINT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    source TEXT NOT NULL,
    result TEXT NOT NULL,
    hash   TEXT NOT NULL,
    PRIMARY KEY (org_id, seq)
);
