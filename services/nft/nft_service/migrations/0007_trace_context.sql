-- The W3C trace context (traceparent, tracestate) of the request that queued work, so the events
-- the minters announce later continue that request's trace (NULL: queued outside any trace).
--   mint_jobs                         MintTickets: TicketMinted and MintFailed of its tickets
--   ticket_nfts.revoke_trace*         RevokeTicket: the TicketRevoked the minters' sweep announces
ALTER TABLE mint_jobs ADD COLUMN traceparent text, ADD COLUMN tracestate text;
ALTER TABLE ticket_nfts ADD COLUMN revoke_traceparent text, ADD COLUMN revoke_tracestate text;
