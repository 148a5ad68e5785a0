-- An org's billing terms (issue 15): a prepaid commitment (an amount for a period, drawn
-- down by what the org's usage costs in it), a monthly hard limit on spend that blocks new
-- clusters, and where spend alerts go. Amounts are decimal strings (exact on both stores).
CREATE TABLE billing_terms (
    org_id           TEXT PRIMARY KEY,
    commitment       TEXT,
    commitment_from  BIGINT,
    commitment_to    BIGINT,
    hard_limit       TEXT,
    alert_webhook    TEXT,
    updated_at       BIGINT NOT NULL
);

-- Spend alerts: one per org, budget period and threshold (percent), fired once; a webhook
-- delivery is retried until it succeeds (`delivered_at`).
CREATE TABLE billing_alerts (
    org_id       TEXT NOT NULL,
    period       TEXT NOT NULL,
    threshold    BIGINT NOT NULL,
    spent        TEXT NOT NULL,
    budget       TEXT NOT NULL,
    fired_at     BIGINT NOT NULL,
    delivered_at BIGINT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    PRIMARY KEY (org_id, period, threshold)
);
