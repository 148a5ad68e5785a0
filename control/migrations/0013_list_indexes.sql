-- Indexes for what is read per request or per planner round as fleets grow: a page of an
-- org's clusters in creation order, the members of given clusters, an org's operations
-- newest first. (Found by `bench/run api` with 10,000 clusters in one org.)
CREATE INDEX clusters_org_created ON clusters (org_id, created_at, id);
CREATE INDEX instances_cluster ON instances (cluster_id);
CREATE INDEX operations_org_created ON operations (org_id, created_at, id);
