-- Billing: invoices per tenant, environment and month (the billing agent's state:
-- open or closed), which fee went to which invoice (so a redelivered fee is billed
-- once, to the same invoice), and the line items (written by the billing sink).
CREATE TABLE invoices (
    invoice_id  uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    environment text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    period_end  timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at   timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    UNIQUE (tenant_id, environment, period)
);
CREATE INDEX invoices_open_idx ON invoices (period_end) WHERE status = 'open';

CREATE TABLE billed_fees (
    fee_id     uuid PRIMARY KEY,
    invoice_id uuid NOT NULL REFERENCES invoices (invoice_id),
    billed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoice_line_items (
    line_item_id    uuid PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    invoice_id      uuid NOT NULL,
    tenant_id       text NOT NULL,
    environment     text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    period          text NOT NULL,
    account_id      text NOT NULL,
    fee_type        text NOT NULL,
    amount          numeric(78, 0) NOT NULL CHECK (amount >= 0),
    currency        text NOT NULL,
    exponent        smallint NOT NULL,
    source_fee_id   uuid,
    correlation_id  text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition int NOT NULL,
    kafka_offset    bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_line_items_invoice_idx ON invoice_line_items (invoice_id);

CREATE VIEW invoice_totals AS
SELECT i.invoice_id, i.tenant_id, i.environment, i.period, i.status, l.currency,
       sum(l.amount) AS total, count(*) AS line_items
  FROM invoices i JOIN invoice_line_items l USING (invoice_id)
 GROUP BY i.invoice_id, i.tenant_id, i.environment, i.period, i.status, l.currency;
