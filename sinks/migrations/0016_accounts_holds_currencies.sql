-- The ledger decides: accounts and currencies are data, ledger accounts belong to a
-- tenant, every entry carries its exponent, and funds are held before money leaves.

-- Crypto assets per chain (native coins and tokens): the currency registry's crypto
-- half. Fiat exponents come from ISO 4217. Watched tokens must be registered assets.
CREATE TABLE crypto_assets (
    chain     text NOT NULL,
    symbol    text NOT NULL CHECK (symbol ~ '^[A-Z0-9]{2,10}$'),
    decimals  smallint NOT NULL CHECK (decimals BETWEEN 0 AND 36),
    contract  text CHECK (contract = lower(contract) AND contract ~ '^0x[0-9a-f]{40}$'),
    PRIMARY KEY (chain, symbol)
);
CREATE UNIQUE INDEX crypto_assets_contract_idx ON crypto_assets (chain, contract) WHERE contract IS NOT NULL;
INSERT INTO crypto_assets (chain, symbol, decimals, contract) VALUES
    ('ethereum', 'ETH', 18, NULL),
    ('polygon', 'POL', 18, NULL),
    ('arbitrum', 'ETH', 18, NULL),
    ('optimism', 'ETH', 18, NULL),
    ('ethereum', 'USDC', 6, '0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48'),
    ('ethereum', 'USDT', 6, '0xdac17f958d2ee523a2206206994597c13d831ec7'),
    ('polygon', 'USDC', 6, '0x3c499c542cef5e3811e1192ce70d8cc03d5c3359');
INSERT INTO crypto_assets (chain, symbol, decimals, contract)
SELECT chain, symbol, decimals, contract FROM chain_tokens ON CONFLICT DO NOTHING;

-- The accounts registry: what a tenant's account is, in which currency, and whether it
-- may move money. One row per account and currency (a multi-currency account holds one
-- balance per currency).
CREATE TABLE accounts (
    tenant_id        text NOT NULL,
    account_id       text NOT NULL,
    currency         text NOT NULL,
    exponent         smallint NOT NULL CHECK (exponent BETWEEN 0 AND 36),
    environment      text NOT NULL CHECK (environment IN ('live', 'sandbox')),
    holder           text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('customer', 'clearing', 'custody', 'fee_revenue',
                                                   'network_fees', 'fx_position', 'suspense')),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen', 'closed')),
    overdraft_limit  numeric(78, 0) NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    opened_at        timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, account_id, currency)
);

-- Ledger accounts move into their tenant's books: `kind:qualifier:CUR` becomes
-- `kind:<tenant>/qualifier:CUR`, one new account per tenant that posted to the old one.
-- Entries are append-only; this one move is the schema's, not a correction of money.
ALTER TABLE ledger_accounts ADD COLUMN tenant_id text;
ALTER TABLE entries ADD COLUMN exponent smallint;

CREATE TEMP TABLE account_moves ON COMMIT DROP AS
SELECT DISTINCT e.ledger_account AS old_code, j.tenant_id,
       split_part(e.ledger_account, ':', 1) || ':' || j.tenant_id || '/'
           || substr(e.ledger_account, length(split_part(e.ledger_account, ':', 1)) + 2) AS new_code
  FROM entries e JOIN journal_entries j USING (journal_entry_id);

INSERT INTO ledger_accounts (code, account_type, normal_side, currency, exponent, tenant_id)
SELECT m.new_code, a.account_type, a.normal_side, a.currency, a.exponent, m.tenant_id
  FROM account_moves m JOIN ledger_accounts a ON a.code = m.old_code;

ALTER TABLE entries DISABLE TRIGGER entries_append_only;
UPDATE entries e
   SET ledger_account = m.new_code, exponent = a.exponent
  FROM journal_entries j, account_moves m, ledger_accounts a
 WHERE j.journal_entry_id = e.journal_entry_id
   AND m.old_code = e.ledger_account AND m.tenant_id = j.tenant_id
   AND a.code = m.new_code;
ALTER TABLE entries ENABLE TRIGGER entries_append_only;

DELETE FROM balances;
INSERT INTO balances (ledger_account, currency, debits, credits)
SELECT ledger_account, currency,
       sum(CASE WHEN side = 'DEBIT' THEN amount ELSE 0 END),
       sum(CASE WHEN side = 'CREDIT' THEN amount ELSE 0 END)
  FROM entries GROUP BY ledger_account, currency;
DELETE FROM ledger_accounts WHERE tenant_id IS NULL;

ALTER TABLE ledger_accounts ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE entries ALTER COLUMN exponent SET NOT NULL;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_money_key UNIQUE (code, currency, exponent);
ALTER TABLE entries DROP CONSTRAINT entries_ledger_account_fkey;
ALTER TABLE entries ADD CONSTRAINT entries_account_money_fkey
    FOREIGN KEY (ledger_account, currency, exponent) REFERENCES ledger_accounts (code, currency, exponent);
CREATE INDEX ledger_accounts_tenant_idx ON ledger_accounts (tenant_id);

-- Holds: funds reserved while money is in flight. ACTIVE until the posting completes
-- it (in the posting's own transaction), a failure releases it, or it expires.
-- A hold whose completion or release arrives before its placement is recorded with
-- its final status, and the late placement changes nothing.
CREATE TABLE holds (
    hold_id         text PRIMARY KEY,
    tenant_id       text NOT NULL,
    account_id      text NOT NULL,
    ledger_account  text NOT NULL,
    currency        text NOT NULL,
    exponent        smallint NOT NULL,
    amount          numeric(78, 0) NOT NULL CHECK (amount > 0),
    status          text NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'RELEASED', 'EXPIRED')),
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    settled_at      timestamptz
);
CREATE INDEX holds_active_idx ON holds (ledger_account) WHERE status = 'ACTIVE';
CREATE INDEX holds_expiry_idx ON holds (expires_at) WHERE status = 'ACTIVE';

-- A transfer request now records several steps (INITIATED, VALIDATING, then
-- BALANCE_RESERVED or FAILED): one history row per step of a source event.
DROP INDEX transaction_status_history_source_idx;
CREATE UNIQUE INDEX transaction_status_history_source_idx
    ON transaction_status_history (source_event_id, to_status, occurred_at);
