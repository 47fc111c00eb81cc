-- A hold carries the correlation id of the work that placed it (a transfer, an FX order, a card
-- authorization), so a balance change its placement, release or expiry causes is announced under
-- that work's correlation id, and `audit trace` shows it. Holds placed before have none.
ALTER TABLE holds ADD COLUMN correlation_id text;
