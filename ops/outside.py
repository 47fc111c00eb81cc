"""The connectors that reach outside the platform, and what each needs from the environment.

- a chain listener per chain whose node is configured: `CHAIN_RPC_URL_<CHAIN>` (e.g.
  `CHAIN_RPC_URL_ETHEREUM`), the node's JSON-RPC endpoint;
- a chain sender per such chain when `CHAIN_SENDER_KEYS` names the wallets' keys file;
- the payout dispatcher when `PAYOUT_PROVIDER_URL` names the payout provider's API
  (`CIRCLE_API_URL` for Circle's, when it is elsewhere).

`ledgerstream run` starts what is configured and says what it left out; the deployment
files carry every one, each started only where its configuration is given. A node's URL
often carries an API key, so it is read from the environment (never a command line, which
any process may read) and printed as its scheme and host only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

CHAINS = ("ethereum", "polygon", "arbitrum", "optimism")
"""The chains a listener can follow (`connectors.chain.CHAINS`, named here without loading web3)."""
SENDER_KEYS = "CHAIN_SENDER_KEYS"
PAYOUT_PROVIDER_URL = "PAYOUT_PROVIDER_URL"
CIRCLE_API_URL = "CIRCLE_API_URL"


def rpc_url_variable(chain: str) -> str:
    """The variable that holds `chain`'s node: `CHAIN_RPC_URL_ETHEREUM`."""
    return f"CHAIN_RPC_URL_{chain.upper()}"


def where(url: str) -> str:
    """A URL as it may be printed: its scheme, host and port, without a path, query or user
    (where a provider's API key usually is)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "an unparsable URL"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


@dataclass(frozen=True)
class Outside:
    """Which outside connectors this environment configures."""

    chains: tuple[str, ...] = ()
    chain_sender: bool = False
    payouts: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Outside:
        chains = tuple(c for c in CHAINS if environ.get(rpc_url_variable(c)))
        return cls(
            chains=chains,
            chain_sender=bool(chains) and bool(environ.get(SENDER_KEYS)),
            payouts=bool(environ.get(PAYOUT_PROVIDER_URL)),
        )

    def left_out(self) -> list[str]:
        """What is not configured, and the variable that would configure it."""
        missing = []
        if not self.chains:
            names = ", ".join(rpc_url_variable(c) for c in CHAINS)
            missing.append(f"the chain listeners and senders (no node: set {names})")
        elif not self.chain_sender:
            missing.append(f"the chain senders (no wallet keys: set {SENDER_KEYS})")
        if not self.payouts:
            missing.append(f"the payout dispatcher (no provider: set {PAYOUT_PROVIDER_URL})")
        return missing
