-- What a finished operation did, for a person (issue 14: a key retirement in the
-- background says which generations it retired and how many objects it sealed again).
ALTER TABLE operations ADD COLUMN outcome TEXT;
