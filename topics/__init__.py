"""Event contracts: the topic catalog, the Avro schemas, the codec and the ledger's journal
contract, and the runtime every component shares. Imports no other ledgerstream package."""
