"""Consumer groups that write topics into PostgreSQL, in batches and idempotently. May import
`topics` only."""
