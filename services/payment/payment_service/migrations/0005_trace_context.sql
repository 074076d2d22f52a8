-- The W3C trace context (traceparent, tracestate) of the CreatePayment request that created a
-- payment: sent with its PaymentIntent (metadata, the same on every retry of the create, so
-- Stripe's idempotent replay sees the same parameters), and continued when a webhook settles it
-- later (3-D Secure, async methods), so PaymentSucceeded from that path stays in the purchase's
-- trace. NULL: created before this column existed.
ALTER TABLE payments ADD COLUMN traceparent text, ADD COLUMN tracestate text;
