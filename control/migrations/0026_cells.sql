-- Cells (issue 14): every cloud and region's hosts are split into cells, and an org lives
-- in one: its clusters run on that cell's hosts only. '' is the one cell of a land
-- without cells (and of everything made before them).
ALTER TABLE orgs ADD COLUMN cell TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN cell TEXT NOT NULL DEFAULT '';
