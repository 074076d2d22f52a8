-- Kit-owned tables, created in every service's own schema (unqualified names: the migration
-- runner sets search_path to that schema).

-- Idempotency keys (meshkit.idempotency): one row per (scope, principal, key).
--   scope      full gRPC method name, so one key cannot collide across RPCs
--   principal  token subject: keys are only unique per caller
--   fingerprint sha256 of the deterministic request bytes: same key + other request is refused
--   lock_token / locked_at  who runs the handler now and since when; a lock older than the
--              store's lock timeout belongs to a dead holder and may be taken over
--   response   serialized response, returned byte-identical on replay (COMPLETED)
--   error_status serialized google.rpc.Status of a final error, replayed verbatim (FAILED)
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    principal    text        NOT NULL,
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,
    state        text        NOT NULL,
    lock_token   uuid,
    locked_at    timestamptz,
    response     bytea,
    error_status bytea,
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, principal, key),
    CONSTRAINT idempotency_keys_state_check
        CHECK (state IN ('STARTED', 'COMPLETED', 'FAILED')),
    CONSTRAINT idempotency_keys_key_length_check
        CHECK (char_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_started_locked_check
        CHECK (state <> 'STARTED' OR (lock_token IS NOT NULL AND locked_at IS NOT NULL)),
    CONSTRAINT idempotency_keys_completed_response_check
        CHECK (state <> 'COMPLETED' OR response IS NOT NULL),
    CONSTRAINT idempotency_keys_failed_status_check
        CHECK (state <> 'FAILED' OR error_status IS NOT NULL)
);

-- The reaper scans by expiry.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- Transactional outbox (meshkit.outbox): rows are inserted in the same transaction as the state
-- change they announce, and a relay delivers them at least once.
--   seq          insertion order; breaks ties between events of one transaction (same created_at)
--   available_at not before this time (exponential backoff after a failed delivery)
CREATE TABLE outbox (
    id           uuid        PRIMARY KEY,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    topic        text        NOT NULL,
    key          text,
    payload      bytea       NOT NULL,
    type_name    text        NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

-- The relay's work queue: only undelivered rows, in delivery order.
CREATE INDEX outbox_pending_idx ON outbox (created_at, seq) WHERE delivered_at IS NULL;
-- The purge of delivered rows.
CREATE INDEX outbox_delivered_at_idx ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- Events that failed max_attempts times; an operator inspects and replays them.
CREATE TABLE outbox_dead_letters (
    id               uuid        PRIMARY KEY,
    topic            text        NOT NULL,
    key              text,
    payload          bytea       NOT NULL,
    type_name        text        NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    attempts         integer     NOT NULL,
    last_error       text,
    created_at       timestamptz NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_dead_letters_topic_idx ON outbox_dead_letters (topic, dead_lettered_at);
