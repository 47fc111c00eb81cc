-- A customer's ledger account (`customer:<tenant>/<account id>:<CUR>`) finds its registry row by
-- the registry's primary key (tenant, account id, currency). The balance reads joined the
-- registry on the code built from each registry row, which no index serves: every batch of the
-- ledger sink scanned the whole registry (3.8 us a transfer with an empty registry, 12.8 us
-- with 300,000 accounts), and `ledger check`'s overdraft rule compared every pair of one
-- tenant's accounts in a currency.

CREATE FUNCTION ledger_account_holder(code text, currency text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN substr(code, strpos(code, '/') + 1, length(code) - strpos(code, '/') - length(currency) - 1);
