-- Bank account details at rest, sealed field by field (topics/fields.py): a beneficiary's
-- reference is written only sealed, under the bank-details key, into `beneficiary_sealed`.
-- The text column stays for the rows written before; `ledgerstream db seal` seals them and
-- empties it, then validates the constraints, which until then hold for new rows only.
ALTER TABLE transfer_requests ADD COLUMN beneficiary_sealed bytea;
ALTER TABLE transfer_requests
    ADD CONSTRAINT transfer_requests_beneficiary_sealed CHECK (beneficiary_reference IS NULL) NOT VALID;
ALTER TABLE transactions ADD COLUMN beneficiary_sealed bytea;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_beneficiary_sealed CHECK (beneficiary_reference IS NULL) NOT VALID;
