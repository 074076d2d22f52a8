"""Background work of the nft service: the mint queue workers (`minter`) and the minting wallet
check (`wallet_check`), run by the kit from start until shutdown."""
