"""The only place the chain SDKs (solders, solana-py) and key material are handled: the chain
(`chain/`: LiteSVM or JSON-RPC behind one interface, token instruction building and account
decoding) and key derivation (`keys.py`)."""
