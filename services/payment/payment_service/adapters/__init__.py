"""Provider adapters: the only modules that talk to outside systems (Stripe)."""
