-- The chain listener's state. Watched wallets and tokens are data; the recent block
-- hashes let it notice a reorganisation; the checkpoint is the last block it
-- processed. A transfer is stored once per block that contained it (a reorg can
-- move it to another block), and is confirmed at most once.
CREATE TABLE chain_wallets (
    chain       text NOT NULL,
    address     text NOT NULL CHECK (address = lower(address) AND address ~ '^0x[0-9a-f]{40}$'),
    tenant_id   text NOT NULL,
    account_id  text NOT NULL,
    PRIMARY KEY (chain, address)
);

CREATE TABLE chain_tokens (
    chain     text NOT NULL,
    contract  text NOT NULL CHECK (contract = lower(contract) AND contract ~ '^0x[0-9a-f]{40}$'),
    symbol    text NOT NULL,
    decimals  smallint NOT NULL CHECK (decimals BETWEEN 0 AND 36),
    PRIMARY KEY (chain, contract)
);

CREATE TABLE chain_checkpoints (
    chain         text PRIMARY KEY,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chain_blocks (
    chain        text NOT NULL,
    number       bigint NOT NULL,
    hash         text NOT NULL,
    parent_hash  text NOT NULL,
    PRIMARY KEY (chain, number)
);

CREATE TABLE chain_transfers (
    chain            text NOT NULL,
    tx_hash          text NOT NULL,
    log_index        int NOT NULL,            -- -1 for a native transfer
    account_id       text NOT NULL,
    block_hash       text NOT NULL,
    block_number     bigint NOT NULL,
    tenant_id        text NOT NULL,
    chain_id         bigint NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('INBOUND', 'OUTBOUND')),
    from_address     text NOT NULL,
    to_address       text NOT NULL,
    amount_units     numeric(78, 0) NOT NULL CHECK (amount_units > 0),
    asset            text NOT NULL,
    decimals         smallint NOT NULL,
    token_contract   text,
    gas_used         bigint,
    base_fee_per_gas numeric(78, 0),
    priority_fee_per_gas numeric(78, 0),
    status           text NOT NULL CHECK (status IN ('detected', 'confirmed', 'reorged')),
    detected_at      timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz,
    PRIMARY KEY (chain, tx_hash, log_index, account_id, block_hash)
);
CREATE UNIQUE INDEX chain_transfers_confirmed_once
    ON chain_transfers (chain, tx_hash, log_index, account_id) WHERE status = 'confirmed';
CREATE INDEX chain_transfers_open_idx ON chain_transfers (chain, block_number) WHERE status = 'detected';
