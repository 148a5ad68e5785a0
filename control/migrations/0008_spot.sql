-- Spot: a host's instance type (with cloud, region and zone, its pool) and the moment a
-- spot notice says it dies; and each pool's record of preemptions and refused launches,
-- which the planner reads to avoid volatile pools.
ALTER TABLE hosts ADD COLUMN instance_type TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN notice_deadline BIGINT;
CREATE TABLE pool_events (
    pool TEXT NOT NULL,
    kind TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX pool_events_at ON pool_events (at);
