-- The kit test app owns no tables of its own.
SELECT 1;
