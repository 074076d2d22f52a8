-- Payments, refunds, payouts, the double-entry ledger, the webhook inbox and venue tax setup.
-- Money is bigint minor units everywhere; statuses are the contract's enum names.

-- Venues' tax jurisdiction (the contract has no RPC for it: the admin CLI
-- `python -m payment_service.venues` and tests write these rows).
CREATE TABLE venues (
    id                text        PRIMARY KEY,
    country_code      text        NOT NULL,
    region_code       text        NOT NULL DEFAULT '',
    locality          text        NOT NULL DEFAULT '',
    postal_code       text        NOT NULL DEFAULT '',
    entertainment_tax boolean     NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    id                  uuid        PRIMARY KEY,
    order_id            text        NOT NULL,
    venue_id            text        NOT NULL,
    event_id            text        NOT NULL,
    buyer_id            text        NOT NULL,
    currency            text        NOT NULL,
    status              text        NOT NULL,
    subtotal            bigint      NOT NULL CHECK (subtotal >= 0),
    platform_fee        bigint      NOT NULL CHECK (platform_fee >= 0),
    gas_fee             bigint      NOT NULL CHECK (gas_fee >= 0),
    tax_total           bigint      NOT NULL CHECK (tax_total >= 0),
    total               bigint      NOT NULL CHECK (total > 0),
    -- Refunds that hold part of the payment (pending, requires action, succeeded); kept under
    -- the payment's row lock, so concurrent refunds can never exceed the total.
    refund_held         bigint      NOT NULL DEFAULT 0,
    refund_succeeded    bigint      NOT NULL DEFAULT 0,
    provider            text        NOT NULL DEFAULT 'stripe',
    provider_payment_id text        UNIQUE,
    provider_charge_id  text,
    payment_method_id   text        NOT NULL,
    client_secret       text,
    next_action_url     text,
    failure_code        text,
    decline_code        text,
    failure_message     text,
    -- The parts of the payment that never change (line items with ticket ids, fee breakdown,
    -- buyer contact, event details, caller metadata) as a serialized Payment message.
    details             bytea       NOT NULL,
    created_by          text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    succeeded_at        timestamptz,
    CONSTRAINT payments_status_check CHECK (status IN (
        'PENDING', 'PROCESSING', 'REQUIRES_ACTION', 'SUCCEEDED', 'PARTIALLY_REFUNDED',
        'REFUNDED', 'FAILED', 'CANCELLED', 'DISPUTED')),
    CONSTRAINT payments_total_parts_check
        CHECK (total = subtotal + platform_fee + gas_fee + tax_total),
    CONSTRAINT payments_refund_check
        CHECK (refund_succeeded >= 0 AND refund_succeeded <= refund_held AND refund_held <= total)
);

-- One live payment per order: a failed or cancelled one may be followed by a new attempt.
CREATE UNIQUE INDEX payments_order_live_idx ON payments (order_id)
    WHERE status NOT IN ('FAILED', 'CANCELLED');
CREATE INDEX payments_buyer_idx ON payments (buyer_id, created_at DESC, id DESC);
CREATE INDEX payments_venue_idx ON payments (venue_id, created_at DESC, id DESC);
CREATE INDEX payments_created_idx ON payments (created_at DESC, id DESC);
-- Reconciliation scans open payments by age.
CREATE INDEX payments_open_idx ON payments (updated_at)
    WHERE status IN ('PENDING', 'PROCESSING', 'REQUIRES_ACTION');

-- Every status change with its cause (rpc method, webhook event id, reconciliation run).
CREATE TABLE payment_transitions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id  uuid        NOT NULL REFERENCES payments (id),
    from_status text,
    to_status   text        NOT NULL,
    cause_kind  text        NOT NULL CHECK (cause_kind IN ('rpc', 'webhook', 'reconciliation')),
    cause_ref   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_transitions_payment_idx ON payment_transitions (payment_id, id);

CREATE TABLE refunds (
    id                 uuid        PRIMARY KEY,
    seq                bigint      GENERATED ALWAYS AS IDENTITY,
    payment_id         uuid        NOT NULL REFERENCES payments (id),
    status             text        NOT NULL CHECK (status IN (
        'PENDING', 'REQUIRES_ACTION', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    amount             bigint      NOT NULL CHECK (amount > 0),
    currency           text        NOT NULL,
    reason             integer     NOT NULL DEFAULT 0,
    note               text        NOT NULL DEFAULT '',
    ticket_ids         text[]      NOT NULL DEFAULT '{}',
    provider_refund_id text        UNIQUE,
    failure_reason     text,
    created_by         text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment_idx ON refunds (payment_id, seq);

CREATE TABLE payouts (
    id                   uuid        PRIMARY KEY,
    venue_id             text        NOT NULL,
    currency             text        NOT NULL,
    status               text        NOT NULL CHECK (status IN (
        'PENDING', 'IN_TRANSIT', 'PAID', 'FAILED', 'CANCELLED')),
    amount               bigint      NOT NULL CHECK (amount > 0),
    fee                  bigint      NOT NULL CHECK (fee >= 0),
    net_amount           bigint      NOT NULL CHECK (net_amount > 0),
    instant              boolean     NOT NULL,
    statement_descriptor text        NOT NULL DEFAULT '',
    provider_payout_id   text        UNIQUE,
    failure_code         text,
    failure_message      text,
    expected_arrival_at  timestamptz,
    created_by           text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payouts_parts_check CHECK (net_amount = amount - fee)
);
CREATE INDEX payouts_venue_day_idx ON payouts (venue_id, currency, created_at);

-- The double-entry ledger. One journal transaction per money movement about one provider
-- object; (object_id, kind) is unique, so a webhook and a synchronous confirmation can never
-- post the same money twice.
CREATE TABLE journal_transactions (
    id         uuid        PRIMARY KEY,
    kind       text        NOT NULL,
    object_id  text        NOT NULL,
    currency   text        NOT NULL,
    payment_id uuid,
    venue_id   text,
    cause      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_transactions_object_kind_key UNIQUE (object_id, kind)
);
CREATE INDEX journal_transactions_payment_idx ON journal_transactions (payment_id);

-- Entries: + debit, - credit. Append-only (triggers below refuse UPDATE and DELETE).
CREATE TABLE ledger_entries (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_id       uuid        NOT NULL REFERENCES journal_transactions (id),
    account      text        NOT NULL,
    venue_id     text,
    currency     text        NOT NULL,
    amount       bigint      NOT NULL CHECK (amount <> 0),
    -- When venue money becomes available (venue_payable only); NULL elsewhere.
    available_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_txn_idx ON ledger_entries (txn_id);
CREATE INDEX ledger_entries_venue_idx ON ledger_entries (venue_id, currency, account)
    WHERE venue_id IS NOT NULL;
-- Trailing 30-day sales volume per venue (the tier).
CREATE INDEX ledger_entries_venue_sales_idx ON ledger_entries (venue_id, created_at)
    WHERE account = 'venue_payable' AND amount < 0;

-- Every journal transaction must balance. Checked per INSERT statement over the statement's new
-- rows only: if the entries each statement adds to a journal transaction sum to zero, every
-- journal transaction sums to zero at all times (entries are never updated or deleted, and a
-- zero-sum group of non-zero amounts has at least two entries).
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT txn_id, sum(amount) AS off INTO bad
    FROM new_entries GROUP BY txn_id HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal transaction % does not balance (off by %)', bad.txn_id, bad.off
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: post a reversal instead'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER journal_transactions_append_only
    BEFORE UPDATE OR DELETE ON journal_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Stripe webhook inbox, keyed by event id: a row is processed exactly once.
CREATE TABLE webhook_inbox (
    event_id     text        PRIMARY KEY,
    provider     text        NOT NULL,
    event_type   text        NOT NULL,
    payload      bytea       NOT NULL,
    outcome      text,
    payment_id   uuid,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX webhook_inbox_unprocessed_idx ON webhook_inbox (received_at)
    WHERE processed_at IS NULL;
