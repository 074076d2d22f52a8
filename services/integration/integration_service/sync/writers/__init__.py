"""Provider writers (one module per provider and entity type); each registers its writer with
`registry.register_writer` at import (`registry.load()` imports them all)."""
