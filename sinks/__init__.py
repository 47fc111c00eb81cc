"""Consumer groups that write topics into PostgreSQL, in batches and idempotently."""
