-- Notifications (the queue rows themselves), templates, preferences, the suppression list,
-- business deduplication keys and the receipt inbox.

-- Every version of every template, per locale. Versions count up per (id, locale).
CREATE TABLE templates (
    id text NOT NULL,
    locale text NOT NULL,
    version integer NOT NULL CHECK (version > 0),
    channel text NOT NULL CHECK (channel IN ('EMAIL', 'SMS', 'PUSH')),
    category text NOT NULL
        CHECK (category IN ('TRANSACTIONAL', 'ACCOUNT', 'EVENT_UPDATES', 'MARKETING')),
    name text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    subject_template text NOT NULL DEFAULT '',
    body_text_template text NOT NULL DEFAULT '',
    body_html_template text NOT NULL DEFAULT '',
    required_variables text[] NOT NULL DEFAULT '{}',
    source text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'shipped')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, locale, version)
);

-- One row per notification: its content as rendered, its delivery state and, while it waits,
-- its queue entry. `destination` is personal data: shown and logged only as
-- `destination_masked`. `message_id` is fixed at creation and reused by every attempt.
CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    status text NOT NULL
        CHECK (status IN ('QUEUED', 'SENDING', 'SENT', 'DELIVERED', 'BOUNCED', 'FAILED',
                          'DEAD_LETTERED', 'SUPPRESSED')),
    channel text NOT NULL CHECK (channel IN ('EMAIL', 'SMS', 'PUSH')),
    category text NOT NULL
        CHECK (category IN ('TRANSACTIONAL', 'ACCOUNT', 'EVENT_UPDATES', 'MARKETING')),
    priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
    user_id text NOT NULL DEFAULT '',
    destination text NOT NULL,
    destination_masked text NOT NULL,
    recipient_name text NOT NULL DEFAULT '',
    time_zone text NOT NULL DEFAULT '',
    subject text NOT NULL DEFAULT '',
    body_text text NOT NULL DEFAULT '',
    body_html text NOT NULL DEFAULT '',
    template_id text,
    template_version integer,
    template_locale text,
    dedup_key text NOT NULL DEFAULT '',
    message_id text NOT NULL UNIQUE,
    provider text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    provider_index smallint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    error_code text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    has_attachments boolean NOT NULL DEFAULT false,
    scheduled_at timestamptz,
    available_at timestamptz NOT NULL DEFAULT now(),
    deferred_reason text NOT NULL DEFAULT '',
    lease_token uuid,
    lease_until timestamptz,
    sent_at timestamptz,
    delivered_at timestamptz,
    failed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

-- The queue: only notifications still to send, in the order workers take them.
CREATE INDEX notifications_queue ON notifications (priority, available_at)
    WHERE status IN ('QUEUED', 'SENDING');
CREATE INDEX notifications_user ON notifications (user_id, created_at DESC, id DESC);
CREATE INDEX notifications_created ON notifications (created_at DESC, id DESC);
CREATE INDEX notifications_provider_message ON notifications (provider_message_id)
    WHERE provider_message_id <> '';
CREATE INDEX notifications_dedup ON notifications (dedup_key) WHERE dedup_key <> '';
CREATE INDEX notifications_operator ON notifications (updated_at DESC)
    WHERE status IN ('DEAD_LETTERED', 'FAILED');

CREATE TABLE notification_attachments (
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    position integer NOT NULL,
    filename text NOT NULL,
    content_type text NOT NULL,
    content bytea NOT NULL,
    PRIMARY KEY (notification_id, position)
);

-- A business dedup key holds its notification until it expires (the deduplication window).
CREATE TABLE dedup_keys (
    dedup_key text PRIMARY KEY,
    notification_id uuid NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE preferences (
    user_id text PRIMARY KEY,
    channels jsonb NOT NULL DEFAULT '[]',
    categories jsonb NOT NULL DEFAULT '[]',
    quiet_hours jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Addresses that get nothing (or, unsubscribed guests, nothing but transactional messages).
CREATE TABLE suppressions (
    channel text NOT NULL CHECK (channel IN ('EMAIL', 'SMS', 'PUSH')),
    destination text NOT NULL,
    reason text NOT NULL
        CHECK (reason IN ('hard_bounce', 'complaint', 'sms_stop', 'unsubscribed')),
    source text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, destination, reason)
);

-- Receipts processed, by the provider's event id: a replayed receipt changes nothing.
CREATE TABLE webhook_inbox (
    provider text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    notification_id uuid,
    outcome text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_inbox_received ON webhook_inbox (received_at);
