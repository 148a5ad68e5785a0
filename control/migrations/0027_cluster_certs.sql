-- A cluster's server certificate (issue 14): every member serves TCP over TLS with it,
-- and the proxies and the cluster's standbys verify the name it carries (which names the
-- cluster, so a server of another cluster cannot pass for it). Its key is sealed under
-- the master key, like the orgs' data keys: whoever reads the store cannot pose as a
-- cluster's servers. Renewed before it expires; removed with its cluster.
CREATE TABLE cluster_certs (
    cluster_id  TEXT PRIMARY KEY,
    server_name TEXT NOT NULL,
    cert_pem    TEXT NOT NULL,
    key_sealed  TEXT NOT NULL,
    not_after   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
