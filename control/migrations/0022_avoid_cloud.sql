-- Moving a spread cluster, evacuating a cloud (issue 11): the cloud a cluster was moved
-- off, which none of its members may stay in or be placed in again until a later move.
ALTER TABLE clusters ADD COLUMN avoid_cloud TEXT;
