-- Issue 14, closing gaps: nothing stranded behind an active job, and provider outages waited out.

-- A StartSync (or RecordTransaction's push, or a webhook's pull) that finds a job already
-- active on the entity type marks it here: the job, once it ends, queues an incremental
-- follow-up for these entity types (FULL when one asked for it), so a record that reached the
-- mirror after the job read its last batch is still synced without waiting for a schedule.
ALTER TABLE sync_job_entities
    ADD COLUMN rerun_push boolean NOT NULL DEFAULT false,
    ADD COLUMN rerun_pull boolean NOT NULL DEFAULT false,
    ADD COLUMN rerun_full boolean NOT NULL DEFAULT false;

-- A job whose provider was unavailable (after the guard's retries, or its breaker open) goes
-- back to PENDING until `not_before`, keeping its checkpoints and the batch in flight;
-- `outages` counts those waits (bounded, then the job FAILS with the provider's error).
ALTER TABLE sync_jobs
    ADD COLUMN not_before timestamptz,
    ADD COLUMN outages integer NOT NULL DEFAULT 0;
