-- Which provider deliveries were ever kept, beyond the inbox's retention: a delivery without a
-- signed timestamp (Circle, Sumsub) captured and replayed after its inbox row was purged is still
-- a duplicate. The purge moves a row's key here as it deletes the row.
CREATE TABLE webhook_seen (
    provider   text NOT NULL,
    event_id   text NOT NULL,
    seen_at    timestamptz NOT NULL,
    PRIMARY KEY (provider, event_id)
);
