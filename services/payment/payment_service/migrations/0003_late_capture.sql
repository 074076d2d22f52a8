-- Late captures: Stripe captured money for a payment this service had already closed
-- (CANCELLED or FAILED). Such a payment is charged in the ledger and refunded in full
-- automatically (core.Core.apply_intent); `late_capture_at` records when that was found, for
-- operators and reports.
ALTER TABLE payments ADD COLUMN late_capture_at timestamptz;

-- A late-captured payment is not its order's live payment: its money is on its way back, and
-- the buyer may already have paid the order with another payment after the first one was
-- closed. Without this exclusion, moving it to SUCCEEDED would violate the index and the
-- late capture could never be recorded (nor refunded).
DROP INDEX payments_order_live_idx;
CREATE UNIQUE INDEX payments_order_live_idx ON payments (order_id)
    WHERE status NOT IN ('FAILED', 'CANCELLED') AND late_capture_at IS NULL;
