-- The command log of transfer requests as they reached Kafka, one row per event.
CREATE TABLE transfer_requests (
    event_id                uuid PRIMARY KEY,
    transfer_id             text NOT NULL,
    account_id              text NOT NULL,
    tenant_id               text NOT NULL,
    environment             text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    amount_units            numeric(78, 0) NOT NULL,
    currency                text NOT NULL,
    exponent                smallint NOT NULL,
    rail                    text NOT NULL,
    destination_account_id  text,
    beneficiary_reference   text,
    reference               text,
    correlation_id          text NOT NULL,
    idempotency_key         text,
    occurred_at             timestamptz NOT NULL,
    kafka_topic             text NOT NULL,
    kafka_partition         int NOT NULL,
    kafka_offset            bigint NOT NULL,
    recorded_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transfer_requests_account_idx ON transfer_requests (account_id, occurred_at);
