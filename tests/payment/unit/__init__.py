"""Payment unit tests: pure domain rules and mappings, no I/O."""
