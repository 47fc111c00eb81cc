-- The ledger sink writes less per transfer.
--
-- 1. `entries_account_idx` goes. No query reads entries by account: `ledger check` and the
--    balances sum whole tables, and everything else reads a journal's entries by its id
--    (the primary key). The index cost about 4 us of the 16 us a transfer's four entries take
--    to insert, and a quarter of their write-ahead log. An account's history, should a
--    reader need it, is `CREATE INDEX CONCURRENTLY` away.
-- 2. `balances` keeps half of each page free. Every batch updates each account it touched;
--    with full pages nearly no update stayed on its page (266 HOT updates of 25,010 in a run
--    of 40,000 transfers over 5,000 accounts), so each one also wrote a new primary key entry
--    and the table grew to 440 pages for 5,002 rows. With room on the page, nearly all are
--    HOT (24,883 of 25,010) and the table stays at 117 pages. Pages written before this
--    migration keep their fill until the table is rewritten (VACUUM FULL).

DROP INDEX entries_account_idx;
ALTER TABLE balances SET (fillfactor = 50);
