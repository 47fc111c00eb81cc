-- A crypto transfer's Travel Rule data (originator and beneficiary), kept with its transaction
-- for as long as the transaction, only sealed under the bank-details key (`topics.fields`),
-- as the rule asks a provider to keep what it passed on. Other transactions have none.
ALTER TABLE transactions ADD COLUMN travel_rule_sealed bytea;
