"""Agents: topic to topic, with no local state (state lives in PostgreSQL and Redis), so any
worker can take any partition. May import `topics` only."""
