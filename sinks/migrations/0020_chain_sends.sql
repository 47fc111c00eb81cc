-- Outbound crypto transfers. A transfer keeps the chain of its asset and its beneficiary (an
-- address on the CRYPTO rail), and the chain sender's state is one row per transfer: claimed
-- and signed in one transaction (the signed bytes and their hash kept, so a crash re-broadcasts
-- the same transaction, never a second one), then broadcast, mined, confirmed or reverted.
ALTER TABLE transactions ADD COLUMN chain text, ADD COLUMN beneficiary_reference text;

CREATE TABLE chain_sends (
    transaction_id  text PRIMARY KEY,
    tenant_id       text NOT NULL,
    account_id      text NOT NULL,
    chain           text NOT NULL,
    from_address    text,
    to_address      text,
    asset           text NOT NULL,
    amount_units    numeric(78, 0) NOT NULL CHECK (amount_units > 0),
    nonce           bigint CHECK (nonce >= 0),
    tx_hash         text,
    raw_tx          bytea,
    status          text NOT NULL
                    CHECK (status IN ('signed', 'broadcast', 'mined', 'confirmed', 'reverted', 'refused')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'refused') = (tx_hash IS NULL))
);
CREATE UNIQUE INDEX chain_sends_tx_idx ON chain_sends (chain, tx_hash) WHERE tx_hash IS NOT NULL;
CREATE UNIQUE INDEX chain_sends_nonce_idx ON chain_sends (chain, from_address, nonce) WHERE nonce IS NOT NULL;
CREATE INDEX chain_sends_open_idx ON chain_sends (chain, status) WHERE status IN ('signed', 'broadcast', 'mined');
