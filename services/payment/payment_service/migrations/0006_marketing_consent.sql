-- Whether the buyer agreed to the venue's marketing (CreatePayment's marketing_consent):
-- PaymentSucceeded carries it, and integration passes the buyer to the venue's marketing and
-- customer tools only then. Rows written before this column: no consent.
ALTER TABLE payments ADD COLUMN marketing_consent boolean NOT NULL DEFAULT false;
