"""The only code that talks to the outside world: webhooks, chain listeners, command API."""
