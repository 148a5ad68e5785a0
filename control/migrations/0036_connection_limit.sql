-- The most sessions the tenant's role may hold at once on a cluster's primary (issue 14):
-- PostgreSQL's own per-role limit, set by the agent; 0: none but the server's.
ALTER TABLE clusters ADD COLUMN connection_limit INTEGER NOT NULL DEFAULT 0;
