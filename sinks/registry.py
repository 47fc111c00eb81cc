"""The sinks `ledgerstream sink <name>` can run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sinks.aml import AmlSink
from sinks.audit import AuditSink
from sinks.base import Sink
from sinks.billing import BillingSink
from sinks.fees import FeesSink
from sinks.fx import FxSink
from sinks.ledger import LedgerSink
from sinks.transfers import TransferRequestSink
from topics.catalog import load_catalog

SINKS: dict[str, Callable[[], Sink[Any]]] = {
    "aml": AmlSink,
    "audit": lambda: AuditSink(load_catalog()),
    "billing": BillingSink,
    "fees": FeesSink,
    "fx": FxSink,
    "ledger": LedgerSink,
    "transfers": TransferRequestSink,
}
