-- The command API's own tables: idempotency keys (kept at least 24 hours), the
-- commands it accepted, and the transactional outbox the relay publishes from.
-- A command, its outbox row and its idempotency key commit in one transaction.
CREATE TABLE api_idempotency (
    tenant_id     text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    status_code   int NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX api_idempotency_expiry_idx ON api_idempotency (expires_at);

CREATE TABLE transfer_commands (
    transfer_id     text PRIMARY KEY,
    account_id      text NOT NULL,
    tenant_id       text NOT NULL,
    environment     text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    user_id         text,
    amount_units    numeric(78, 0) NOT NULL CHECK (amount_units > 0),
    currency        text NOT NULL,
    exponent        smallint NOT NULL,
    rail            text NOT NULL,
    correlation_id  text NOT NULL,
    idempotency_key text NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    aggregate_id  text NOT NULL,
    topic         text NOT NULL,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    key           bytea NOT NULL,
    value         bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'failed')),
    attempts      int NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE status = 'pending';
