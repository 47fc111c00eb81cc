"""AML rules as data and their evaluation as plain functions.

A ruleset (YAML, versioned) applies to a market (its currencies) and to some
tenants (`*` for all); every ruleset that matches an event's currency and tenant
is evaluated. Rule kinds, each over a sliding window ending at the event:
- `count`: more than `max_count` transactions;
- `amount`: more than `max_amount` minor (or base) units moved;
- `structuring`: at least `min_count` amounts in [threshold - margin, threshold),
  i.e. just under a reporting threshold;
- `rapid_in_out`: an outflow that brings the window's outflows to at least
  `ratio_percent` of its inflows, when inflows reached `min_amount`;
- `new_counterparties`: at least `min_count` counterparties first seen in the window.
Sanctioned addresses are not a window rule: any transfer touching a listed address
on either side is flagged and, when it is a transfer request, blocked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from topics.errors import LedgerstreamError
from topics.money import ExactInt

Direction = Literal["IN", "OUT"]
_WINDOW = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class RulesError(LedgerstreamError, ValueError):
    """A ruleset or screening list that cannot be used."""


def window_ms(text: str) -> int:
    """`90s`, `15m`, `1h`, `7d` in milliseconds."""
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"window {text!r} is not like 15m, 1h or 7d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: Literal["count", "amount", "structuring", "rapid_in_out", "new_counterparties"]
    window: str
    score: int = Field(ge=0, le=100)
    max_count: int | None = None
    max_amount: ExactInt | None = None
    threshold: ExactInt | None = None
    margin: ExactInt | None = None
    min_count: int | None = None
    ratio_percent: int | None = None
    min_amount: ExactInt | None = None

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        window_ms(self.window)
        needs = {
            "count": ("max_count",),
            "amount": ("max_amount",),
            "structuring": ("threshold", "margin", "min_count"),
            "rapid_in_out": ("ratio_percent", "min_amount"),
            "new_counterparties": ("min_count",),
        }[self.kind]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"rule {self.id} ({self.kind}) needs {', '.join(missing)}")
        return self

    @cached_property
    def window_ms(self) -> int:
        """Parsed once per rule, not once per event."""
        return window_ms(self.window)


class Ruleset(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    version: int
    jurisdiction: str
    currencies: tuple[str, ...]
    tenants: tuple[str, ...] = ("*",)
    rules: tuple[Rule, ...]

    def applies(self, currency: str, tenant: str) -> bool:
        return ("*" in self.currencies or currency in self.currencies) and (
            "*" in self.tenants or tenant in self.tenants
        )


class RuleBook(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rulesets: tuple[Ruleset, ...]
    sanctions_list: str
    sanctions_score: int = 100
    addresses: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _unique(self) -> RuleBook:
        ids = [r.id for rs in self.rulesets for r in rs.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique across rulesets")
        return self

    def for_event(self, currency: str, tenant: str) -> list[tuple[Ruleset, Rule]]:
        return [(rs, rule) for rs in self.rulesets if rs.applies(currency, tenant) for rule in rs.rules]

    @property
    def horizon_ms(self) -> int:
        """The longest window: how far back the windows keep events."""
        return max((r.window_ms for rs in self.rulesets for r in rs.rules), default=3_600_000)

    def sanctioned(self, *addresses: str | None) -> str | None:
        for address in addresses:
            if address and address.strip().lower() in self.addresses:
                return address
        return None


def load_rules(path: Path) -> RuleBook:
    """The ruleset file and its screening list (one address per line, `#` comments)."""
    try:
        data = yaml.safe_load(path.read_text())
        book = RuleBook.model_validate(data)
    except (OSError, yaml.YAMLError, ValueError) as e:
        raise RulesError(f"AML rules {path}: {e}") from e
    listing = (path.parent / book.sanctions_list).resolve()
    try:
        lines = listing.read_text().splitlines()
    except OSError as e:
        raise RulesError(f"sanctions list {listing}: {e}") from e
    addresses = {line.split("#")[0].strip().lower() for line in lines} - {""}
    bad = [a for a in addresses if not re.fullmatch(r"0x[0-9a-f]{40}", a)]
    if bad:
        raise RulesError(f"sanctions list {listing}: not EVM addresses: {sorted(bad)[:3]}")
    if not addresses:
        raise RulesError(f"sanctions list {listing} is empty: screening would pass everything")
    return book.model_copy(update={"addresses": frozenset(addresses)})


@dataclass(frozen=True)
class Movement:
    """One transaction in an account's window."""

    event_id: str
    at_ms: int
    units: int
    direction: Direction


@dataclass(frozen=True)
class Hit:
    rule_id: str
    ruleset: str
    version: int
    score: int
    window: str
    evidence: dict[str, str]


def evaluate(
    rule: Rule,
    ruleset: Ruleset,
    current: Movement,
    movements: list[Movement],
    counterparties_first_seen: list[int],
    currency: str,
) -> Hit | None:
    """Whether `rule` trips for `current`, given the account's movements and the times its
    counterparties were first seen (all up to and including the current event)."""
    start = current.at_ms - rule.window_ms
    inside = [m for m in movements if start <= m.at_ms <= current.at_ms]
    if not any(m.event_id == current.event_id for m in inside):
        inside.append(current)
    evidence: dict[str, str] = {"window": rule.window, "currency": currency, "count": str(len(inside))}
    tripped = False
    if rule.kind == "count":
        assert rule.max_count is not None
        tripped = len(inside) > rule.max_count
        evidence["max_count"] = str(rule.max_count)
    elif rule.kind == "amount":
        assert rule.max_amount is not None
        total = sum(m.units for m in inside)
        tripped = total > rule.max_amount
        evidence.update(sum=str(total), max_amount=str(rule.max_amount))
    elif rule.kind == "structuring":
        assert rule.threshold is not None and rule.margin is not None and rule.min_count is not None
        near = [m for m in inside if rule.threshold - rule.margin <= m.units < rule.threshold]
        tripped = current in near and len(near) >= rule.min_count
        evidence.update(just_under=str(len(near)), threshold=str(rule.threshold), margin=str(rule.margin))
    elif rule.kind == "rapid_in_out":
        assert rule.ratio_percent is not None and rule.min_amount is not None
        inflow = sum(m.units for m in inside if m.direction == "IN")
        outflow = sum(m.units for m in inside if m.direction == "OUT")
        tripped = (
            current.direction == "OUT"
            and inflow >= rule.min_amount
            and outflow * 100 >= inflow * rule.ratio_percent
        )
        evidence.update(inflow=str(inflow), outflow=str(outflow), ratio_percent=str(rule.ratio_percent))
    elif rule.kind == "new_counterparties":
        assert rule.min_count is not None
        new = sum(1 for at in counterparties_first_seen if start <= at <= current.at_ms)
        tripped = new >= rule.min_count
        evidence.update(new_counterparties=str(new), min_count=str(rule.min_count))
    if not tripped:
        return None
    return Hit(rule.id, ruleset.id, ruleset.version, rule.score, rule.window, evidence)
