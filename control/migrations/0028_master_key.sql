-- Which master key sealed what the store holds (issue 14): its fingerprint (never the
-- key), and the audit chain's key sealed under it. Until now the chain key was derived
-- from the master key, so a new master key would have broken every chain; it becomes a
-- key of its own (the derived value, so existing chains verify), re-sealed like the
-- orgs' data keys and the clusters' certificate keys when the master key is rotated.
CREATE TABLE master_key (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint      TEXT NOT NULL,
    audit_key_sealed TEXT NOT NULL,
    sealed_at        BIGINT NOT NULL
);
