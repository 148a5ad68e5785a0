-- Per-cluster replication credentials: standbys stream from their primary as this role.
ALTER TABLE clusters ADD COLUMN repl_password TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN repl_scram TEXT NOT NULL DEFAULT '';
