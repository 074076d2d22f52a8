-- Revocations accepted before the ticket's mint is settled (domain/revocation.py).
--   revoke_requested_at  when the revocation was accepted; revoke_reason, revocation_method,
--                        revoke_reference and revoke_note hold what was asked from then on, and
--                        the status becomes REVOKED when it is applied (burned or frozen on
--                        chain, or never minted)
--   mint_state CANCELLED a ticket revoked before anything that could mint it reached the chain
ALTER TABLE ticket_nfts ADD COLUMN revoke_requested_at timestamptz;

ALTER TABLE ticket_nfts DROP CONSTRAINT ticket_nfts_mint_state_check;
ALTER TABLE ticket_nfts ADD CONSTRAINT ticket_nfts_mint_state_check
    CHECK (mint_state IN ('QUEUED', 'SUBMITTED', 'MINTED', 'RETRYING', 'FAILED',
                          'DEAD_LETTERED', 'CANCELLED')) NOT VALID;
ALTER TABLE ticket_nfts VALIDATE CONSTRAINT ticket_nfts_mint_state_check;

-- Revocations still to apply: the minters' sweep takes them from here (a handful at most; the
-- sweep's query repeats the predicate literally so the planner can use it).
CREATE INDEX ticket_nfts_revocations ON ticket_nfts (available_at)
    WHERE revoke_requested_at IS NOT NULL AND status <> 'REVOKED';

-- Tickets waiting for an operator (the dead-letter gauge counts them).
CREATE INDEX ticket_nfts_stopped ON ticket_nfts (mint_state)
    WHERE mint_state IN ('FAILED', 'DEAD_LETTERED');
