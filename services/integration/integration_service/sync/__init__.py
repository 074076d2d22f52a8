"""The sync engine (issue 14): jobs that move a venue's records between our mirror and its
providers in batches, with checkpoints, an id map, dead letters and progress for WatchSyncJob.

`ports` is the interface between the engine and the provider writers/readers; `registry` holds
the writers and readers by (provider, entity type); `engine` runs the jobs."""
