-- Ticket NFTs, their mint queue, content-addressed metadata and the history of platform moves.

-- One durable mint job per payment. Its status is derived from its tickets on read.
CREATE TABLE mint_jobs (
    id uuid PRIMARY KEY,
    payment_id text NOT NULL UNIQUE,
    order_id text NOT NULL,
    event_id text NOT NULL,
    venue_id text NOT NULL,
    buyer_id text NOT NULL,
    priority smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
    -- sha256 of the ticket list: the same payment with other tickets is refused.
    tickets_fingerprint bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per ticket: the NFT record and, while it is being minted, its queue entry.
-- The mint address, seed and the signature of every send are written before the send.
CREATE TABLE ticket_nfts (
    ticket_id text PRIMARY KEY,
    job_id uuid NOT NULL REFERENCES mint_jobs (id),
    position integer NOT NULL,
    payment_id text NOT NULL,
    order_id text NOT NULL,
    event_id text NOT NULL,
    venue_id text NOT NULL,
    buyer_id text NOT NULL,
    mint_address text NOT NULL UNIQUE,
    mint_seed text NOT NULL,
    token_program text NOT NULL,
    owner_wallet text NOT NULL,
    custodial boolean NOT NULL,
    event_name text NOT NULL,
    venue_name text NOT NULL,
    event_starts_at timestamptz,
    section text NOT NULL DEFAULT '',
    "row" text NOT NULL DEFAULT '',
    seat text NOT NULL DEFAULT '',
    ticket_type text NOT NULL DEFAULT '',
    image_url text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    metadata_sha text NOT NULL,
    metadata_uri text NOT NULL,
    status text NOT NULL DEFAULT 'PENDING'
        CHECK (status IN ('PENDING', 'ACTIVE', 'REVOKED', 'FAILED')),
    mint_state text NOT NULL DEFAULT 'QUEUED'
        CHECK (mint_state IN ('QUEUED', 'SUBMITTED', 'MINTED', 'RETRYING', 'FAILED',
                              'DEAD_LETTERED')),
    priority smallint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    lease_token uuid,
    lease_until timestamptz,
    picked_at timestamptz,
    signature text,
    signatures text[] NOT NULL DEFAULT '{}',
    last_valid_block_height bigint,
    cost_lamports bigint,
    error_code text,
    error_message text,
    minted_at timestamptz,
    minted_slot bigint,
    revoke_reason smallint,
    revocation_method smallint,
    revoke_note text,
    revoke_reference text,
    revoked_at timestamptz,
    revoke_signature text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The queue: only tickets still to mint are indexed, in the order workers take them.
CREATE INDEX ticket_nfts_queue ON ticket_nfts (priority, available_at)
    WHERE mint_state IN ('QUEUED', 'SUBMITTED', 'RETRYING');
CREATE INDEX ticket_nfts_job ON ticket_nfts (job_id, position);
CREATE INDEX ticket_nfts_owner ON ticket_nfts (owner_wallet, ticket_id);
CREATE INDEX ticket_nfts_buyer ON ticket_nfts (buyer_id, ticket_id);
CREATE INDEX ticket_nfts_event ON ticket_nfts (event_id, ticket_id);
CREATE INDEX ticket_nfts_payment ON ticket_nfts (payment_id, ticket_id);
CREATE INDEX ticket_nfts_minted ON ticket_nfts (minted_at DESC) WHERE mint_state = 'MINTED';

-- Off-chain metadata JSON, content-addressed: the key is the sha256 of the exact bytes served.
CREATE TABLE nft_metadata (
    sha text PRIMARY KEY,
    body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every transfer and revocation the platform made on chain.
CREATE TABLE ticket_operations (
    id uuid PRIMARY KEY,
    ticket_id text NOT NULL REFERENCES ticket_nfts (ticket_id),
    kind text NOT NULL CHECK (kind IN ('TRANSFER', 'REVOKE')),
    from_wallet text,
    to_wallet text,
    reason smallint NOT NULL,
    method smallint,
    reference_id text NOT NULL DEFAULT '',
    note text NOT NULL DEFAULT '',
    signature text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_operations_ticket ON ticket_operations (ticket_id, created_at);
