-- The buyer's contact, carried from MintTicketsRequest so that the job's TicketMinted and
-- MintFailed events can say where to write (no service reads another's tables). JSON object
-- with the set fields of tickettoken.common.v1.ContactInfo; '{}' when the payment sent none.
ALTER TABLE mint_jobs ADD COLUMN buyer_contact jsonb NOT NULL DEFAULT '{}'::jsonb;
