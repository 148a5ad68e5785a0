-- Usage sent to cloud marketplaces (issue 15): a durable outbox. An hour's records for an
-- org are staged in one transaction with the org's cursor (the end of the last staged
-- window, moved only from the value read), keyed (org, dimension, hour) so staging twice
-- writes nothing twice; each record is then sent until its marketplace has answered for
-- it. The account is copied into the record: a record goes to the account it was used
-- under, whatever the link says later. `in_doubt`: the record went out in a call whose
-- answer was lost, so the marketplace may hold it.
CREATE TABLE marketplace_cursors (
    org_id         TEXT PRIMARY KEY,
    linked_at      BIGINT NOT NULL,
    staged_through BIGINT NOT NULL
);

CREATE TABLE marketplace_records (
    org_id          TEXT NOT NULL,
    dimension       TEXT NOT NULL,
    hour            BIGINT NOT NULL,
    marketplace     TEXT NOT NULL,
    account         TEXT NOT NULL,
    licence         TEXT,
    window_start    BIGINT NOT NULL,
    window_end      BIGINT NOT NULL,
    quantity        BIGINT NOT NULL,
    operation_id    TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    in_doubt        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    receipt         TEXT,
    staged_at       BIGINT NOT NULL,
    settled_at      BIGINT,
    PRIMARY KEY (org_id, dimension, hour)
);
CREATE INDEX marketplace_records_pending ON marketplace_records (marketplace, state, hour);
