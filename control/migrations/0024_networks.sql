-- Tenant networks and private endpoints (issue 14). A network is an org's "VPC" in the
-- land (the local land: a Linux network namespace); a private endpoint is a listener of
-- the proxies at an address inside one, serving one cluster.
CREATE TABLE networks (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    name       TEXT NOT NULL,
    cidr       TEXT NOT NULL,
    namespace  TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE private_endpoints (
    id         TEXT PRIMARY KEY,
    cluster_id TEXT NOT NULL REFERENCES clusters(id),
    network_id TEXT NOT NULL REFERENCES networks(id),
    address    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, address)
);
CREATE INDEX private_endpoints_cluster ON private_endpoints (cluster_id);
