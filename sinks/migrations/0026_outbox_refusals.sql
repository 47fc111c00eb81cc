-- A row Kafka refuses while it is up (too large, a topic the relay may not write) is tried again
-- on a schedule and then failed, rather than stopping the relay or every row behind it. Its
-- account's later rows wait behind it, so the account's events stay in order.
-- `refusals` counts the refusals (not the attempts an unreachable broker failed);
-- `next_attempt_at` is when a refused row may be tried again (NULL: never refused, or published).
ALTER TABLE outbox ADD COLUMN refusals int NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at timestamptz;
CREATE INDEX outbox_held_idx ON outbox (aggregate_id) WHERE next_attempt_at IS NOT NULL;
