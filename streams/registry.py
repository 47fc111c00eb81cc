"""The agents `ledgerstream agent <name>` can run."""

from __future__ import annotations

from collections.abc import Callable

from streams.base import BatchHandler
from streams.ledger.agent import LedgerHandler
from streams.status.agent import StatusHandler
from topics.codec import AvroCodec
from topics.settings import Settings

AGENTS: dict[str, Callable[[Settings, AvroCodec], BatchHandler]] = {
    "status": StatusHandler,
    "ledger": lambda settings, codec: LedgerHandler(),
}
