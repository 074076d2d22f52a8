-- The sync engine (issue 14): our mirror of the venues' records, sync jobs with per-entity
-- checkpoints, the id map, dead letters, logs, progress for WatchSyncJob, schedules and field
-- mappings.

-- Our side of every sync: the venue's catalogue (PRODUCT = a ticket type with its event),
-- remaining tickets (INVENTORY), consenting buyers (CUSTOMER), sales (PAYMENT) and refunds
-- (REFUND), as the mapping schema reads them (`data`, JSON). `seq` grows with every change
-- (writers of one venue and entity are serialised by an advisory lock, so seq order is commit
-- order within it): incremental syncs read the rows after their cursor. A deleted record stays
-- as a tombstone (`deleted`) so that syncs delete it at the providers.
CREATE SEQUENCE mirror_seq;
CREATE TABLE mirror_records (
    venue_id text NOT NULL,
    entity text NOT NULL
        CHECK (entity IN ('PRODUCT', 'INVENTORY', 'CUSTOMER', 'PAYMENT', 'REFUND')),
    internal_id text NOT NULL,
    data jsonb NOT NULL,
    content_hash text NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    seq bigint NOT NULL DEFAULT nextval('mirror_seq'),
    -- Where the last change came from: 'ingest' (our RPCs) or a connection id (a pull).
    origin text NOT NULL DEFAULT 'ingest',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, entity, internal_id)
);
CREATE INDEX mirror_records_changes ON mirror_records (venue_id, entity, seq);

-- A sync run over one connection and one or more entity types (run in `position` order).
CREATE TABLE sync_jobs (
    id uuid PRIMARY KEY,
    connection_id uuid NOT NULL REFERENCES connections (id),
    venue_id text NOT NULL,
    provider text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('PUSH', 'PULL', 'BIDIRECTIONAL')),
    mode text NOT NULL CHECK (mode IN ('INCREMENTAL', 'FULL', 'RETRY')),
    status text NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'PARTIAL')),
    phase text NOT NULL DEFAULT 'QUEUED',
    current_entity text NOT NULL DEFAULT '',
    records_total bigint NOT NULL DEFAULT 0,
    records_processed bigint NOT NULL DEFAULT 0,
    records_succeeded bigint NOT NULL DEFAULT 0,
    records_failed bigint NOT NULL DEFAULT 0,
    records_skipped bigint NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    error_code text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    -- The worker holding the job and until when (renewed by its heartbeat); an expired lease
    -- lets another worker take the job over from its checkpoints.
    lease_owner text NOT NULL DEFAULT '',
    lease_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    -- The last progress sequence written (sync_progress.seq).
    progress_seq bigint NOT NULL DEFAULT 0,
    requested_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_jobs_claimable ON sync_jobs (created_at) WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX sync_jobs_connection ON sync_jobs (connection_id, created_at);

-- One entity type of a job: its checkpoint (the mirror seq done, PUSH; the provider cursor,
-- PULL) and state. At most one active job per connection and entity type (the partial unique
-- index): a second StartSync answers the active one.
CREATE TABLE sync_job_entities (
    job_id uuid NOT NULL REFERENCES sync_jobs (id),
    connection_id uuid NOT NULL,
    entity text NOT NULL,
    position integer NOT NULL,
    active boolean NOT NULL DEFAULT true,
    done boolean NOT NULL DEFAULT false,
    since_seq bigint NOT NULL DEFAULT 0,
    checkpoint_seq bigint NOT NULL DEFAULT 0,
    pull_cursor text,
    -- RETRY jobs: only these internal ids.
    only_ids text[],
    deletes_done boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, entity)
);
CREATE UNIQUE INDEX sync_job_entities_one_active
    ON sync_job_entities (connection_id, entity) WHERE active;

-- Per connection, entity type and direction: what the last successful syncs reached (the
-- mirror seq pushed; the provider's cursor pulled), and the batch in flight (`pending`: the
-- exact records sent, written before the provider is called, so a crash resends the same
-- batch with the same idempotency key instead of a differently composed one).
CREATE TABLE sync_cursors (
    connection_id uuid NOT NULL,
    entity text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('PUSH', 'PULL')),
    pushed_seq bigint NOT NULL DEFAULT 0,
    pull_cursor text,
    pending jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, entity, direction)
);

-- Our id ↔ the provider's id per connection and entity type, with the content hash last
-- written (an unchanged record is skipped; a known one is updated, never created again).
CREATE TABLE id_map (
    connection_id uuid NOT NULL,
    entity text NOT NULL,
    internal_id text NOT NULL,
    external_id text NOT NULL,
    content_hash text NOT NULL DEFAULT '',
    extra jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, entity, internal_id)
);
CREATE UNIQUE INDEX id_map_external ON id_map (connection_id, entity, external_id);

-- Records that failed to sync: one open row per record (resolved when a later write succeeds).
CREATE TABLE sync_dead_letters (
    id uuid PRIMARY KEY,
    connection_id uuid NOT NULL,
    job_id uuid NOT NULL,
    entity text NOT NULL,
    internal_id text NOT NULL,
    external_id text NOT NULL DEFAULT '',
    direction text NOT NULL,
    error_code text NOT NULL,
    error_message text NOT NULL DEFAULT '',
    attempts integer NOT NULL DEFAULT 1,
    retryable boolean NOT NULL DEFAULT false,
    resolved boolean NOT NULL DEFAULT false,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX sync_dead_letters_open
    ON sync_dead_letters (connection_id, entity, internal_id, direction) WHERE NOT resolved;
CREATE INDEX sync_dead_letters_list
    ON sync_dead_letters (connection_id, last_failed_at DESC, id) WHERE NOT resolved;

-- The sync log (ListSyncLogs), newest first.
CREATE TABLE sync_logs (
    id uuid PRIMARY KEY,
    seq bigserial,
    job_id uuid NOT NULL,
    connection_id uuid NOT NULL,
    level text NOT NULL CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR')),
    message text NOT NULL,
    entity text NOT NULL DEFAULT '',
    internal_id text NOT NULL DEFAULT '',
    external_id text NOT NULL DEFAULT '',
    details jsonb NOT NULL DEFAULT '{}',
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_logs_job ON sync_logs (job_id, seq DESC);
CREATE INDEX sync_logs_connection ON sync_logs (connection_id, seq DESC);

-- A job's progress, one row per change (WatchSyncJob streams the rows after a sequence).
CREATE TABLE sync_progress (
    job_id uuid NOT NULL,
    seq bigint NOT NULL,
    status text NOT NULL,
    phase text NOT NULL,
    entity text NOT NULL DEFAULT '',
    records_total bigint NOT NULL,
    records_processed bigint NOT NULL,
    records_succeeded bigint NOT NULL,
    records_failed bigint NOT NULL,
    records_skipped bigint NOT NULL,
    rate_per_minute bigint NOT NULL DEFAULT 0,
    eta_seconds bigint NOT NULL DEFAULT 0,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, seq)
);

-- Periodic incremental syncs, one schedule per connection; due ones are queued by a leased
-- job (one replica at a time).
CREATE TABLE sync_schedules (
    connection_id uuid PRIMARY KEY,
    entities text[] NOT NULL DEFAULT '{}',
    direction text NOT NULL CHECK (direction IN ('PUSH', 'PULL', 'BIDIRECTIONAL')),
    interval_s integer NOT NULL CHECK (interval_s > 0),
    enabled boolean NOT NULL DEFAULT true,
    next_run_at timestamptz,
    last_run_at timestamptz,
    last_job_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_schedules_due ON sync_schedules (next_run_at) WHERE enabled;

-- A connection's field mappings (SetFieldMappings), the whole set as JSON, versioned.
CREATE TABLE field_mappings (
    connection_id uuid PRIMARY KEY,
    version integer NOT NULL,
    mappings jsonb NOT NULL,
    updated_by text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
