"""The only code that talks to the outside world: webhooks, chain listeners, command API,
payouts and the outbox relay. May import `topics` only."""
