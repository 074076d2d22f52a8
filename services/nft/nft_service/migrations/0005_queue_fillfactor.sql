-- A ticket's row is updated several times on its way to the chain (claimed, submitted, minted).
-- Room left on each page lets the updates that change no indexed column (taking and renewing a
-- lease) stay on the page without touching the table's nine indexes (HOT updates).
ALTER TABLE ticket_nfts SET (fillfactor = 70);
