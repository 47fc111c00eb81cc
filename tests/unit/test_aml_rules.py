"""AML rules: every kind, window edges, structuring bounds, sanctions, ruleset loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.aml.rules import Movement, Rule, RulesError, Ruleset, evaluate, load_rules, window_ms
from topics.settings import REPO_ROOT

H = 3_600_000
T = 10 * 24 * H  # an arbitrary "now" in ms
BOOK = load_rules(REPO_ROOT / "streams" / "aml" / "rules.yaml")


def ruleset(*rules: Rule) -> Ruleset:
    return Ruleset(id="rs", version=2, jurisdiction="EU", currencies=("EUR",), rules=rules)


def rule(**kw) -> Rule:
    return Rule.model_validate({"id": "r", "window": "1h", "score": 10, **kw})


def mv(n: int, at: int, units: int = 100, direction: str = "OUT") -> Movement:
    return Movement(f"e{n}", at, units, direction)  # type: ignore[arg-type]


def check(r: Rule, current: Movement, history: list[Movement], parties: list[int] | None = None):
    return evaluate(r, ruleset(r), current, [*history, current], parties or [], "EUR")


def test_count_trips_above_the_maximum_only():
    r = rule(kind="count", max_count=3)
    history = [mv(i, T - i * 1000) for i in range(1, 3)]
    assert check(r, mv(0, T), history) is None  # 3 in the window
    hit = check(r, mv(0, T), [*history, mv(9, T - 5000)])
    assert hit is not None and hit.evidence["count"] == "4" and hit.version == 2


def test_window_start_is_inclusive_and_older_events_fall_out():
    r = rule(kind="count", max_count=1)
    assert check(r, mv(0, T), [mv(1, T - H)]) is not None  # exactly one hour back: inside
    assert check(r, mv(0, T), [mv(1, T - H - 1)]) is None  # one millisecond older: outside
    assert check(r, mv(0, T), [mv(1, T + 1)]) is None  # later events are not in this event's window


def test_amount_sums_exactly_beyond_2_to_the_64():
    r = rule(kind="amount", max_amount=2**70)
    big = 2**69 + 1
    assert check(r, mv(0, T, big), [mv(1, T - 10, 2**69 - 1)]) is None  # exactly 2^70
    hit = check(r, mv(0, T, big), [mv(1, T - 10, 2**69)])
    assert hit is not None and hit.evidence["sum"] == str(2**70 + 1)


def test_structuring_counts_amounts_just_under_the_threshold():
    r = rule(kind="structuring", window="24h", threshold=1_000_000, margin=100_000, min_count=3)
    under = [mv(1, T - 3 * H, 900_000), mv(2, T - 2 * H, 999_999)]  # 900,000 is the lower bound: counted
    assert check(r, mv(0, T, 950_000), under) is not None
    assert check(r, mv(0, T, 1_000_000), under) is None  # at the threshold: reported anyway, not structuring
    assert check(r, mv(0, T, 950_000), [mv(1, T - 3 * H, 899_999), under[1]]) is None  # below the band
    assert check(r, mv(0, T, 950_000), under[:1]) is None  # only two


def test_rapid_in_and_out_trips_on_the_outflow():
    r = rule(kind="rapid_in_out", window="30m", ratio_percent=80, min_amount=500_000)
    inflow = mv(1, T - 10 * 60_000, 600_000, "IN")
    assert check(r, mv(0, T, 480_000, "OUT"), [inflow]) is not None  # exactly 80%
    assert check(r, mv(0, T, 479_999, "OUT"), [inflow]) is None
    assert check(r, mv(0, T, 600_000, "IN"), [mv(2, T - 60_000, 600_000, "OUT")]) is None  # only on outflows
    small = mv(1, T - 60_000, 400_000, "IN")
    assert check(r, mv(0, T, 400_000, "OUT"), [small]) is None  # inflow below min_amount
    old = mv(1, T - 31 * 60_000, 600_000, "IN")
    assert check(r, mv(0, T, 600_000, "OUT"), [old]) is None  # the inflow left the window


def test_new_counterparty_bursts():
    r = rule(kind="new_counterparties", min_count=3)
    assert check(r, mv(0, T), [], [T - 100, T - 50, T]) is not None
    assert check(r, mv(0, T), [], [T - H - 1, T - 50, T]) is None


def test_sanctioned_addresses_match_either_side_case_insensitively():
    listed = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
    assert BOOK.sanctioned(None, listed.lower()) == listed.lower()
    assert BOOK.sanctioned("0x" + "12" * 20, listed.upper().replace("0X", "0x")) is not None
    assert BOOK.sanctioned("0x" + "12" * 20, None) is None


def test_rulesets_apply_by_currency_and_tenant():
    ids = {r.id for _, r in BOOK.for_event("EUR", "any-tenant")}
    assert "eu-structuring-24h" in ids and not any(i.startswith("us-") for i in ids)
    assert {r.id for _, r in BOOK.for_event("ETH", "t")} == {"crypto-count-1h", "crypto-eth-amount-24h"}
    assert BOOK.for_event("JPY", "t") == []
    only = Ruleset(id="x", version=1, jurisdiction="EU", currencies=("EUR",), tenants=("t9",), rules=())
    assert only.applies("EUR", "t9") and not only.applies("EUR", "t1")


def test_windows_parse():
    assert window_ms("90s") == 90_000 and window_ms("7d") == 7 * 24 * H
    with pytest.raises(ValueError):
        window_ms("1w")


@pytest.mark.parametrize(
    ("rules", "addresses", "error"),
    [
        ("- {id: a, kind: amount, window: 1h, score: 1, max_amount: 1.5}", "0x" + "ab" * 20, "exact integer"),
        ("- {id: a, kind: count, window: 1h, score: 1}", "0x" + "ab" * 20, "needs max_count"),
        ("- {id: a, kind: count, window: 1w, score: 1, max_count: 1}", "0x" + "ab" * 20, "window"),
        ("- {id: a, kind: count, window: 1h, score: 1, max_count: 1}", "# nothing listed", "empty"),
        ("- {id: a, kind: count, window: 1h, score: 1, max_count: 1}", "not-an-address", "not EVM"),
    ],
)
def test_bad_rules_or_lists_are_refused_at_load(tmp_path: Path, rules: str, addresses: str, error: str):
    (tmp_path / "list.txt").write_text(addresses + "\n")
    (tmp_path / "rules.yaml").write_text(
        "sanctions_list: list.txt\nrulesets:\n  - id: x\n    version: 1\n    jurisdiction: EU\n"
        f"    currencies: [EUR]\n    rules:\n      {rules}\n"
    )
    with pytest.raises(RulesError, match=error):
        load_rules(tmp_path / "rules.yaml")
