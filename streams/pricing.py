"""The pricing file (fee schedules, FX pricing, subscription plans), read once and validated."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from streams.billing.invoicing import BillingBook
from streams.fees.schedule import FeeBook, ScheduleError
from streams.fx.pricing import FxBook


@dataclass(frozen=True)
class Pricing:
    fees: FeeBook
    fx: FxBook
    billing: BillingBook


def load_pricing(path: Path) -> Pricing:
    """Read `path` (`[fees]`, `[fx]`, `[billing]`); a float or an unknown key is an error."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ScheduleError(f"cannot read pricing {path}: {e}") from e
    unknown = set(data) - {"fees", "fx", "billing"}
    if unknown:
        raise ScheduleError(f"pricing {path}: unknown sections {sorted(unknown)}")
    try:
        return Pricing(
            fees=FeeBook.model_validate(data.get("fees", {})),
            fx=FxBook.model_validate(data.get("fx", {})),
            billing=BillingBook.model_validate(data.get("billing", {})),
        )
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScheduleError(f"pricing {path}: {where}: {first['msg']} ({e.error_count()} problem(s))") from e
