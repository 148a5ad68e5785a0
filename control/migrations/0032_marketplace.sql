-- An org that pays through a cloud's marketplace (issue 15): which one, and the account
-- the marketplace knows the customer by (AWS: customer account id and License Manager
-- licence ARN; Azure: SaaS subscription id; GCP: usage reporting id). Its clusters run on
-- that cloud only, so the consumption counts toward the customer's commitment there.
CREATE TABLE marketplace_links (
    org_id      TEXT PRIMARY KEY,
    marketplace TEXT NOT NULL,
    account     TEXT NOT NULL,
    licence     TEXT,
    linked_at   BIGINT NOT NULL
);
