-- FX orders accepted by the command API (POST /v1/fx/orders), written with their
-- outbox row and idempotency key in one transaction, like transfer_commands.
CREATE TABLE fx_order_commands (
    order_id        text PRIMARY KEY,
    account_id      text NOT NULL,
    tenant_id       text NOT NULL,
    environment     text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    user_id         text,
    sell_units      numeric(78, 0) NOT NULL CHECK (sell_units > 0),
    sell_currency   text NOT NULL,
    sell_exponent   smallint NOT NULL,
    buy_currency    text NOT NULL,
    buy_exponent    smallint NOT NULL,
    order_type      text NOT NULL CHECK (order_type IN ('MARKET', 'OTC')),
    correlation_id  text NOT NULL,
    idempotency_key text NOT NULL,
    accepted_at     timestamptz NOT NULL DEFAULT now()
);
