"""The transaction status agent: the lifecycle of every transaction."""
