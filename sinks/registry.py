"""The sinks `ledgerstream sink <name>` can run."""

from __future__ import annotations

from typing import Any

from sinks.aml import AmlSink
from sinks.base import Sink
from sinks.billing import BillingSink
from sinks.fees import FeesSink
from sinks.fx import FxSink
from sinks.ledger import LedgerSink
from sinks.transfers import TransferRequestSink

SINKS: dict[str, type[Sink[Any]]] = {
    "aml": AmlSink,
    "billing": BillingSink,
    "fees": FeesSink,
    "fx": FxSink,
    "ledger": LedgerSink,
    "transfers": TransferRequestSink,
}
