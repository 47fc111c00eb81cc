-- The relay asks, before every batch, whether any row is held behind a refusal: the smallest
-- `next_attempt_at`, answered from this index's first entry whatever the table's statistics
-- say (a fresh or bulk-loaded outbox has none, and a plan from guesses scanned the table).
DROP INDEX outbox_held_idx;
CREATE INDEX outbox_next_attempt_idx ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
