-- Baseline of the integration schema. The kit's own tables (idempotency keys, outbox,
-- dead letters) are created by the kit's migrations; integration tables arrive with the issues
-- that build its RPCs.
SELECT 1;
