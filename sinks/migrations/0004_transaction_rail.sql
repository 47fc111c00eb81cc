-- The rail a transaction moves on: the ledger posts its clearing leg there.
ALTER TABLE transactions ADD COLUMN rail text;
