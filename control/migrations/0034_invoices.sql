-- Issued invoices (issue 15): a closed month's invoice is frozen six hours after the month
-- ends, numbered in the order issued (gap-free: the number is taken in the issuing
-- transaction, unique). `document` is the invoice as the API shows it (JSON); the
-- settlement columns are what credits and the prepaid commitment drew down.
-- `invoiced_usage`: per cluster, dimension and place, every unit any issued invoice holds
-- (cumulative), so usage recorded after its month's invoice rides on the next, exactly once.
-- `billing_credits`: credits the operator grants an org (decimal strings); an invoice
-- draws them down before the commitment.
CREATE TABLE invoices (
    org_id              TEXT NOT NULL,
    month               TEXT NOT NULL,
    number              BIGINT NOT NULL UNIQUE,
    issued_at           BIGINT NOT NULL,
    total               TEXT NOT NULL,
    credits_applied     TEXT NOT NULL,
    commitment_applied  TEXT NOT NULL,
    commitment_period   TEXT,
    due                 TEXT NOT NULL,
    document            TEXT NOT NULL,
    PRIMARY KEY (org_id, month)
);

CREATE TABLE invoiced_usage (
    org_id      TEXT NOT NULL,
    cluster_id  TEXT NOT NULL,
    cluster_name TEXT NOT NULL,
    dimension   TEXT NOT NULL,
    cloud       TEXT NOT NULL,
    region      TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    PRIMARY KEY (org_id, cluster_id, dimension, cloud, region)
);

CREATE TABLE billing_credits (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    granted_at  BIGINT NOT NULL
);
CREATE INDEX billing_credits_org ON billing_credits (org_id);
