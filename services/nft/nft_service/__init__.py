"""TicketToken Mesh nft service (tickettoken.nft.v1.NftService)."""
