-- Fees as assessed by the fees agent (written by the fees sink), one row per fee
-- event (one currency), its breakdown in fee_lines. total = sum of its lines.
CREATE TABLE fees (
    fee_id             uuid PRIMARY KEY,
    event_id           uuid NOT NULL UNIQUE,
    source_event_id    uuid NOT NULL,
    account_id         text NOT NULL,
    tenant_id          text NOT NULL,
    environment        text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    transaction_id     text,
    fee_config_version text NOT NULL,
    total              numeric(78, 0) NOT NULL CHECK (total >= 0),
    currency           text NOT NULL,
    exponent           smallint NOT NULL CHECK (exponent BETWEEN 0 AND 18),
    correlation_id     text NOT NULL,
    occurred_at        timestamptz NOT NULL,
    kafka_topic        text NOT NULL,
    kafka_partition    int NOT NULL,
    kafka_offset       bigint NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fees_account_idx ON fees (account_id, occurred_at);
CREATE INDEX fees_tenant_idx ON fees (tenant_id, occurred_at);

CREATE TABLE fee_lines (
    fee_id    uuid NOT NULL REFERENCES fees (fee_id),
    line_no   smallint NOT NULL,
    tier      text NOT NULL CHECK (tier IN ('PLATFORM', 'PROVIDER', 'NETWORK', 'COMPLIANCE', 'PREMIUM')),
    category  text NOT NULL,
    method    text NOT NULL CHECK (method IN ('PERCENTAGE', 'FLAT', 'TIERED', 'GAS')),
    amount    numeric(78, 0) NOT NULL CHECK (amount > 0),
    currency  text NOT NULL,
    provider  text,
    PRIMARY KEY (fee_id, line_no)
);
