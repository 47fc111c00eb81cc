"""Developer tooling: the demo (`ledgerstream demo`), the benchmarks (`ledgerstream bench`),
and the stand-ins the demo and the tests drive: signed provider webhooks, a provider's
payout API, an in-process EVM, and an ASGI app served on a thread.

Nothing in the running pipeline imports it, and the installed package leaves it out
(`pyproject.toml` excludes `ops.dev`): `demo`, `bench` and `connect provider-sandbox` need
a checkout. It may import anything of the project."""
