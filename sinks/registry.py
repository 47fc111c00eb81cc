"""The sinks `ledgerstream sink <name>` can run."""

from __future__ import annotations

from typing import Any

from sinks.base import Sink
from sinks.ledger import LedgerSink
from sinks.transfers import TransferRequestSink

SINKS: dict[str, type[Sink[Any]]] = {
    "ledger": LedgerSink,
    "transfers": TransferRequestSink,
}
