"""The nft service's use cases, one module per group:

  minting   MintTickets, GetMintJob, the operator's requeue
  tickets   GetTicketNft, ListTicketNfts, VerifyOwnership, the metadata documents
  custody   TransferTicket, RevokeTicket (platform moves on chain)
  wallet    GetMintingWallet, the low-balance check, the dev airdrop

and the steps several of them (and the minter, jobs/minter.py) share, each ONE module that the
others call, never each other sideways: `onchain` (read a ticket or a batch of mints on chain),
`events` (the contract messages this service announces), `metrics`, `sending` (sign and send
the platform's own transactions) and `revocation` (apply an accepted revocation, for
RevokeTicket and the minters' sweep). Each use case opens its own
transactions (`Database.run_in_tx`), speaks domain types, and raises domain errors.
"""
