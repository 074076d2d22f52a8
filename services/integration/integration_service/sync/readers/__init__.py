"""Readers: pull one entity type from one provider, page by page, after an incremental cursor
(each module registers its readers into `sync.registry`)."""
