-- Baseline of the payment schema. The kit's own tables (idempotency keys, outbox,
-- dead letters) are created by the kit's migrations; payment tables arrive with the issues
-- that build its RPCs.
SELECT 1;
