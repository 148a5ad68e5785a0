-- Who may use a cluster's public endpoint (issue 14): whether it takes connections at
-- all, and the source networks it takes them from (CIDRs joined by commas; empty: any).
ALTER TABLE clusters ADD COLUMN public_endpoint INTEGER NOT NULL DEFAULT 1;
ALTER TABLE clusters ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT '';
