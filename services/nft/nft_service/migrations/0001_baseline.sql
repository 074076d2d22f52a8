-- Baseline of the nft schema. The kit's own tables (idempotency keys, outbox,
-- dead letters) are created by the kit's migrations; nft tables arrive with the issues
-- that build its RPCs.
SELECT 1;
