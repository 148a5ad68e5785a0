-- The data key generation each primary's WAL archiver seals with, as its agent reports
-- it (issue 14): an org's older generations are retired only once every primary seals
-- with the newest.
ALTER TABLE instances ADD COLUMN sealing_generation BIGINT;
