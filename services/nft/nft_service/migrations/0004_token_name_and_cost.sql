-- What the mint of each ticket carries besides its uri, fixed when the ticket is queued so that
-- the mint and the metadata document (which repeats both) always agree:
--   token_name    the on-chain name (at most 32 bytes); NULL = the default built from the event
--                 name and the seat (domain/metadata.default_name)
--   token_symbol  the on-chain symbol; NULL = the service's NFT_SYMBOL
-- And what the mint cost, next to cost_lamports (rents at the chain's rent + the signature fee):
--   mint_size     bytes of the mint account as sent (its rent is part of cost_lamports)
ALTER TABLE ticket_nfts
    ADD COLUMN token_name text,
    ADD COLUMN token_symbol text,
    ADD COLUMN mint_size integer;
