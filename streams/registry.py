"""The agents `ledgerstream agent <name>` can run."""

from __future__ import annotations

from collections.abc import Callable

from streams.aml.agent import AmlHandler
from streams.aml.rules import load_rules
from streams.base import BatchHandler
from streams.billing.agent import BillingHandler
from streams.fees.agent import FeesHandler
from streams.fx.agent import FxHandler
from streams.ledger.agent import LedgerHandler
from streams.pricing import load_pricing
from streams.status.agent import StatusHandler
from topics.codec import AvroCodec
from topics.settings import Settings

AGENTS: dict[str, Callable[[Settings, AvroCodec], BatchHandler]] = {
    "status": StatusHandler,
    "aml": lambda settings, codec: AmlHandler(settings, load_rules(settings.aml_rules_file)),
    "ledger": lambda settings, codec: LedgerHandler(load_pricing(settings.pricing_file).fees.native_assets),
    "fees": lambda settings, codec: FeesHandler(load_pricing(settings.pricing_file).fees),
    "fx": lambda settings, codec: FxHandler(settings, codec, load_pricing(settings.pricing_file).fx),
    "billing": lambda settings, codec: BillingHandler(settings, load_pricing(settings.pricing_file).billing),
}
