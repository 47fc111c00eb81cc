"""Event contracts: the topic catalog, the Avro schemas and the codec every component shares."""
