"""Where the local stack and a supervised run listen on this machine.

Fixed ports, so clients find the stack without asking. `LEDGERSTREAM_PORT_OFFSET=N` moves
every one of them by N together, so a second checkout can run its own stack and its own
`ledgerstream run` beside the first (a long chaos run in one, the suite in the other).
The settings' defaults (`topics.settings`) name the moved stack, and `ledgerstream stack env`
exports the offset with the addresses.
"""

from __future__ import annotations

import os

from topics.errors import ConfigError

OFFSET_VARIABLE = "LEDGERSTREAM_PORT_OFFSET"
MAX_OFFSET = 10_000


def port_offset() -> int:
    """The offset from the environment; 0 when unset."""
    raw = os.environ.get(OFFSET_VARIABLE, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > MAX_OFFSET:
        raise ConfigError(f"{OFFSET_VARIABLE} must be a whole number from 0 to {MAX_OFFSET}, not {raw!r}")
    return int(raw)


def _offset_or_zero() -> int:
    try:
        return port_offset()
    except ConfigError:
        return 0  # the command line refuses it with a one-line message (ops.cli.main)


OFFSET = _offset_or_zero()
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 19092 + OFFSET, 19093 + OFFSET
POSTGRES_PORT = 15432 + OFFSET
REDIS_PORT = 16379 + OFFSET
REGISTRY_PORT = 18081 + OFFSET


def metrics_base(offset: int = OFFSET) -> int:
    """The first worker's /healthz, /readyz and /metrics port in a supervised run."""
    return 9400 + offset


def api_ports(offset: int = OFFSET) -> tuple[int, int]:
    """The command API's public and admin ports in a supervised run."""
    return 18080 + offset, 18082 + offset


def webhook_ports(offset: int = OFFSET) -> tuple[int, int]:
    """The webhook service's public and admin ports in a supervised run."""
    return 18090 + offset, 18091 + offset


METRICS_BASE, API_PORTS, WEBHOOK_PORTS = metrics_base(), api_ports(), webhook_ports()
"""This machine's (moved by the offset); deployment manifests use the unmoved ones."""
