-- Transactions and their status history. The status agent is the only writer:
-- a transaction changes only through status-update events.

CREATE TABLE transactions (
    transaction_id          text PRIMARY KEY,
    account_id              text NOT NULL,
    tenant_id               text NOT NULL,
    environment             text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    transaction_type        text NOT NULL,
    direction               text NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount_units            numeric(78, 0) NOT NULL,
    currency                text NOT NULL,
    exponent                smallint NOT NULL CHECK (exponent BETWEEN 0 AND 18),
    counterparty_account_id text,
    status                  text NOT NULL,
    version                 bigint NOT NULL CHECK (version >= 1),
    correlation_id          text NOT NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);
CREATE INDEX transactions_account_idx ON transactions (account_id, created_at);

-- One row per applied status change, keyed by the event that caused it.
-- Range-partitioned by month on the time the change happened.
CREATE TABLE transaction_status_history (
    event_id           uuid NOT NULL,
    transaction_id     text NOT NULL,
    from_status        text,
    to_status          text NOT NULL,
    reason             text,
    provider_update_id text,
    version            bigint NOT NULL,
    source_event_id    uuid NOT NULL,
    correlation_id     text NOT NULL,
    occurred_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX transaction_status_history_txn_idx ON transaction_status_history (transaction_id, version);
CREATE UNIQUE INDEX transaction_status_history_source_idx
    ON transaction_status_history (source_event_id, occurred_at);

-- Monthly partitions are created ahead by ensure_monthly_partitions(); the default
-- partition keeps anything outside them so no insert ever fails for want of one.
CREATE FUNCTION ensure_monthly_partitions(parent regclass, first_month date, months int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m date;
    child text;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        m := (date_trunc('month', first_month) + make_interval(months => i))::date;
        child := format('%s_%s', parent::text, to_char(m, 'YYYY_MM'));
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
            child, parent, m, (m + interval '1 month')::date
        );
    END LOOP;
END $$;

CREATE TABLE transaction_status_history_default PARTITION OF transaction_status_history DEFAULT;
SELECT ensure_monthly_partitions('transaction_status_history', date '2026-01-01', 36);
