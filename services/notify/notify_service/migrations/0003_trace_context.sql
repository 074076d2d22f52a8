-- The W3C trace context (traceparent, tracestate) of the SendNotification request that queued a
-- notification: its delivery is logged, and its NotificationSent / Delivered / Failed announced,
-- in that request's trace (a purchase's), however much later and in whichever process it is
-- sent. NULL: queued before this column existed (the worker's own trace is used then).
ALTER TABLE notifications ADD COLUMN traceparent text, ADD COLUMN tracestate text;
