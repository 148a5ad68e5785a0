-- Metering (issue 15). `meters`: per source (an instance) and kind of counter, the last
-- reading taken into usage and what its usage is recorded under (org, cluster, dimension,
-- place: fixed when the source is first read, so a later move or plan change does not
-- re-label time already used). Both keep the cluster's name: usage outlives its cluster,
-- whose row goes when its deletion finishes. `usage_hourly`: usage per cluster, dimension, place and
-- hour. A reading adds to the hours and moves the meter's last reading in one transaction,
-- the move conditional on the last reading being the one read: a retry, a duplicate or a
-- restarted control plane adds nothing twice.
CREATE TABLE meters (
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    host_id     TEXT NOT NULL,
    org_id      TEXT NOT NULL,
    cluster_id  TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    cloud       TEXT NOT NULL,
    region      TEXT NOT NULL,
    last_value  BIGINT NOT NULL,
    last_at_ms  BIGINT NOT NULL,
    closed      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (source, kind)
);

CREATE TABLE usage_hourly (
    org_id      TEXT NOT NULL,
    cluster_id  TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    cloud       TEXT NOT NULL,
    region      TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    quantity    BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, dimension, cloud, region, hour)
);
CREATE INDEX usage_hourly_org ON usage_hourly (org_id, hour);
