-- Provider webhooks: every verified delivery is kept once in the inbox, with its raw
-- body and what became of it; UNIQUE (provider, event_id) is the durable guard
-- against redeliveries. The events it produced go to the outbox in the same
-- transaction. provider_links names the tenant and account behind a provider's
-- own id (a card, a customer, a merchant account, a wallet, an applicant).
CREATE TABLE webhook_inbox (
    id              uuid PRIMARY KEY,
    provider        text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'processed', 'failed', 'ignored')),
    retries         int NOT NULL DEFAULT 0,
    external_ref    text,
    tenant_id       text,
    account_id      text,
    raw_body        text NOT NULL,
    result          jsonb NOT NULL DEFAULT '[]',
    error           text,
    correlation_id  text NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    UNIQUE (provider, event_id)
);
CREATE INDEX webhook_inbox_open_idx ON webhook_inbox (provider, received_at) WHERE status IN ('pending', 'failed');

CREATE TABLE provider_links (
    provider      text NOT NULL,
    external_ref  text NOT NULL,
    tenant_id     text NOT NULL,
    account_id    text NOT NULL,
    linked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, external_ref)
);
