"""The integration service's use cases: one module per group; shared steps (vault, tokens,
states, events) are the only ones others import."""
