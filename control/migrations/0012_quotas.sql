-- Per-org quotas set by the operator; an org without a row has the defaults
-- (`crate::quota::Quotas::default`).
CREATE TABLE quotas (
    org_id                    TEXT PRIMARY KEY REFERENCES orgs(id),
    max_clusters              BIGINT NOT NULL,
    max_members_per_cluster   BIGINT NOT NULL,
    max_storage_bytes         BIGINT NOT NULL,
    max_concurrent_operations BIGINT NOT NULL
);
