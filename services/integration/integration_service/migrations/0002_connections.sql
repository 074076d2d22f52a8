-- Venue connections, their sealed credentials, the audit of every credential use, and the
-- webhook inbox (issue 13).

-- One row per connection of a venue to a provider account. Credentials live in `credentials`
-- (sealed); nothing here is secret. At most one live connection per venue, provider and
-- provider account: authorizing the same account again recovers it.
CREATE TABLE connections (
    id uuid PRIMARY KEY,
    venue_id text NOT NULL,
    provider text NOT NULL CHECK (provider IN ('stripe', 'square', 'mailchimp', 'quickbooks')),
    auth_kind text NOT NULL CHECK (auth_kind IN ('oauth2', 'api_key')),
    status text NOT NULL
        CHECK (status IN ('CONNECTED', 'NEEDS_REAUTH', 'ERROR', 'DISCONNECTED')),
    scopes text[] NOT NULL DEFAULT '{}',
    external_account_id text NOT NULL DEFAULT '',
    external_account_name text NOT NULL DEFAULT '',
    credential_hint text NOT NULL DEFAULT '',
    api_base text NOT NULL DEFAULT '',
    settings jsonb NOT NULL DEFAULT '{}',
    -- SHA-256 of the per-connection secret in Mailchimp's webhook URL (never the secret).
    webhook_secret_digest bytea,
    last_error_code text NOT NULL DEFAULT '',
    last_error text NOT NULL DEFAULT '',
    token_expires_at timestamptz,
    refresh_expires_at timestamptz,
    refresh_due_at timestamptz,
    last_tested_at timestamptz,
    last_synced_at timestamptz,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX connections_live_account
    ON connections (venue_id, provider, external_account_id) WHERE status <> 'DISCONNECTED';
CREATE INDEX connections_venue ON connections (venue_id, created_at, id);
CREATE INDEX connections_account ON connections (provider, external_account_id)
    WHERE status <> 'DISCONNECTED';
CREATE INDEX connections_refresh_due ON connections (refresh_due_at)
    WHERE status = 'CONNECTED' AND refresh_due_at IS NOT NULL;

-- The sealed credential of a connection: its data key wrapped by a KEK version, and the
-- AES-256-GCM nonce and ciphertext. Deleting the row destroys the data key (crypto-shredding).
-- `version` counts writes; `fence` is the highest refresh fence accepted (a stale lock holder's
-- write is refused).
CREATE TABLE credentials (
    connection_id uuid PRIMARY KEY REFERENCES connections (id),
    provider text NOT NULL,
    kek_version text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    fence bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credentials_kek ON credentials (kek_version);

-- Every time a credential was opened: who, when, why (never what).
CREATE TABLE credential_audit (
    id bigserial PRIMARY KEY,
    connection_id uuid NOT NULL,
    actor text NOT NULL,
    request_id text NOT NULL DEFAULT '',
    purpose text NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credential_audit_connection ON credential_audit (connection_id, used_at);

-- Provider webhook events, by the provider's event id: each is handled once; a row exists only
-- for an event whose processing committed.
CREATE TABLE webhook_inbox (
    provider text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('PROCESSED', 'IGNORED')),
    connection_ids uuid[] NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_inbox_received ON webhook_inbox (received_at);
