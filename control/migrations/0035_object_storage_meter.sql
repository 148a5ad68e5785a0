-- Object storage metering (issue 15): the control plane measures each cluster's objects in
-- each cloud's store itself. Its meters advance at the size last measured (MiB), kept
-- here; the meters of agents and proxies, which send cumulative counters, keep 0.
ALTER TABLE meters ADD COLUMN rate BIGINT NOT NULL DEFAULT 0;
