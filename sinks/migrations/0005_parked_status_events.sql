-- Status reports and block decisions that arrived before their transaction existed
-- (they travel on other topics than the transfer request, so Kafka does not order
-- them). The status agent keeps them here, raw, and applies them in order as soon as
-- the transaction is created: reordering changes nothing.
CREATE TABLE transaction_status_parked (
    source_event_id uuid PRIMARY KEY,
    transaction_id  text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    kafka_key       bytea,
    value           bytea NOT NULL,
    occurred_at     timestamptz NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transaction_status_parked_txn_idx ON transaction_status_parked (transaction_id, occurred_at);
