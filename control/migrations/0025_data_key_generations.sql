-- An org's data keys by generation (issue 14): rotating adds one, the newest seals, every
-- one kept opens what it sealed (objects name their generation). Deleting an org removes
-- them all: its objects can no longer be opened by anyone (crypto-shredding). The key an
-- org had before is its generation 1.
CREATE TABLE org_data_keys (
    org_id     TEXT NOT NULL REFERENCES orgs(id),
    generation BIGINT NOT NULL,
    wrapped    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, generation)
);
INSERT INTO org_data_keys (org_id, generation, wrapped, created_at)
    SELECT org_id, 1, wrapped, created_at FROM org_keys;
DROP TABLE org_keys;
ALTER TABLE orgs ADD COLUMN deleted_at BIGINT;
