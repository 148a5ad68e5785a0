-- Storage autoscaling (issue 12): the smallest host disk a cluster's members need (0: any; the
-- planner raises it) and the most it may grow to (0: off); each host's own disk size as asked
-- for at launch or as the land reported it.
ALTER TABLE clusters ADD COLUMN disk_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clusters ADD COLUMN autoscale_max_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN disk_bytes BIGINT;
