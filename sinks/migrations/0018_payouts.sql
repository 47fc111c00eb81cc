-- The payout dispatcher's own state: one row per transfer it sends to a provider, claimed
-- before the provider is called (so a crash resends with the same idempotency key, never a
-- second payout), with the provider's payout id once it answered.
CREATE TABLE payouts (
    transaction_id  text PRIMARY KEY,
    tenant_id       text NOT NULL,
    account_id      text NOT NULL,
    provider        text NOT NULL,
    payout_id       text,
    status          text NOT NULL CHECK (status IN ('sending', 'sent')),
    attempts        int NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payouts_sending_idx ON payouts (created_at) WHERE status = 'sending';
