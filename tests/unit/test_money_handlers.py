"""The fees and ledger agents driven without a broker: events in, encodable events out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.fees.agent import FeesHandler, chargeable
from streams.ledger.agent import LedgerHandler, journal_for
from streams.pricing import load_pricing
from tests.fixtures.events import metadata, transfer_confirmed
from topics.codec import AvroCodec
from topics.events import Event
from topics.journals import check_balanced
from topics.settings import REPO_ROOT

PRICING = load_pricing(REPO_ROOT / "streams" / "pricing.toml")
AUGUST = int(datetime(2026, 8, 1, tzinfo=UTC).timestamp() * 1_000_000)


@pytest.fixture(scope="module")
def codec(store) -> AvroCodec:
    return AvroCodec(store)


def as_event(codec: AvroCodec, topic: str, record: dict) -> Event:
    """Through the wire and back, so the record is what a consumer would see."""
    value = codec.encode(topic, record)
    return Event(codec.decode(value, topic=topic), topic, 0, 0, None, value)


def completed(units: int = 10_000, **overrides) -> dict:
    return {
        "metadata": metadata("payments.transaction.completed", occurred_at=AUGUST),
        "account_id": "acc-1",
        "transaction_id": "tx-1",
        "transaction_type": "TRANSFER",
        "direction": "DEBIT",
        "amount": {"units": units, "currency": "EUR", "exponent": 2},
        "counterparty_account_id": None,
        "version": 7,
        "rail": "SEPA",
        **overrides,
    }


def test_a_completed_transfer_is_assessed_and_its_fee_posts_balanced(codec):
    event = as_event(codec, "payments.transaction.completed.v1", completed())
    [out] = FeesHandler(PRICING.fees).handle([event]).outputs
    fee = as_event(codec, out.topic, out.record)  # encodes: the record matches the schema
    assert fee.record["fee_config_version"] == "default@v2"
    assert fee.record["total"] == {"units": 37, "currency": "EUR", "exponent": 2}
    assert [(x["tier"], x["amount"]["units"]) for x in fee.record["lines"]] == [
        ("PLATFORM", 25),
        ("PROVIDER", 10),
        ("COMPLIANCE", 2),
    ]
    journal = journal_for(fee.topic, fee.record)
    assert journal is not None
    check_balanced(journal)
    assert [(line.account, line.side, line.units) for line in journal.lines] == [
        ("customer:tenant-1/acc-1:EUR", "DEBIT", 37),
        ("fee_revenue:tenant-1/compliance:EUR", "CREDIT", 2),
        ("fee_revenue:tenant-1/platform:EUR", "CREDIT", 25),
        ("fee_revenue:tenant-1/provider:EUR", "CREDIT", 10),
    ]
    again = FeesHandler(PRICING.fees).handle([event]).outputs
    assert again[0].record["fee_id"] == out.record["fee_id"]  # deterministic: a replay is recognised


def test_an_outbound_eth_transfer_charges_its_gas_beyond_2_to_the_64_wei(codec):
    record = transfer_confirmed(wei=25 * 10**18)
    record["metadata"]["occurred_at"] = AUGUST
    record["transfer"].update(
        direction="OUTBOUND",
        gas_used=21_000,
        base_fee_per_gas=Decimal(900 * 10**12),
        priority_fee_per_gas=Decimal(2 * 10**9),
    )
    [out] = (
        FeesHandler(PRICING.fees)
        .handle([as_event(codec, "crypto.wallet.transfer.confirmed.v1", record)])
        .outputs
    )
    fee = as_event(codec, out.topic, out.record)
    lines = {x["tier"]: x["amount"]["units"] for x in fee.record["lines"]}
    assert lines == {
        "COMPLIANCE": Decimal(125 * 10**14),
        "NETWORK": Decimal(21_000 * (900 * 10**12 + 2 * 10**9)),
    }
    assert fee.record["total"]["units"] == sum(lines.values()) > 2**64
    journal = journal_for(fee.topic, fee.record)
    assert journal is not None and {line.account for line in journal.lines} >= {
        "network_fees:tenant-1/ethereum:ETH"
    }


def test_not_chargeable_events_produce_nothing(codec):
    fx_txn = completed(transaction_type="FX")
    assert chargeable("payments.transaction.completed.v1", fx_txn) is None
    assert (
        FeesHandler(PRICING.fees)
        .handle([as_event(codec, "payments.transaction.completed.v1", fx_txn)])
        .outputs
        == []
    )


def test_a_fee_before_any_schedule_is_refused_with_the_reason(codec):
    early = completed()
    early["metadata"]["occurred_at"] = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1_000_000)
    result = FeesHandler(PRICING.fees).handle([as_event(codec, "payments.transaction.completed.v1", early)])
    assert result.outputs == [] and "no fee schedule" in result.refused[0][1]


def test_a_conversion_posts_both_legs_through_the_fx_positions(codec):
    record = {
        "metadata": metadata("fx.conversion.executed"),
        "account_id": "acc-1",
        "conversion_id": "c-1",
        "order_id": "o-1",
        "pair": "EUR/USD",
        "rate": Decimal("1.0746"),
        "market_rate": Decimal("1.08"),
        "markup_bps": 50,
        "bonus_bps": 0,
        "sold": {"units": 10_000, "currency": "EUR", "exponent": 2},
        "bought": {"units": 10_746, "currency": "USD", "exponent": 2},
        "rate_source": "ecb",
        "rate_quoted_at": datetime(2026, 11, 23, tzinfo=UTC),
    }
    [out] = LedgerHandler().handle([as_event(codec, "fx.conversion.executed.v1", record)]).outputs
    assert {(x["ledger_account"], x["side"]) for x in out.record["lines"]} == {
        ("customer:tenant-1/acc-1:EUR", "DEBIT"),
        ("fx_position:tenant-1/platform:EUR", "CREDIT"),
        ("fx_position:tenant-1/platform:USD", "DEBIT"),
        ("customer:tenant-1/acc-1:USD", "CREDIT"),
    }


def outbound(**transfer) -> dict:
    record = transfer_confirmed(wei=25 * 10**18)
    record["metadata"]["occurred_at"] = AUGUST
    record["transfer"].update(direction="OUTBOUND", **transfer)
    return record


GAS = {
    "gas_used": 21_000,
    "base_fee_per_gas": Decimal(30 * 10**9),
    "priority_fee_per_gas": Decimal(2 * 10**9),
}
GAS_WEI = 21_000 * 32 * 10**9


def test_the_gas_an_outbound_transfer_paid_leaves_custody_as_a_network_expense(codec):
    record = outbound(**GAS)
    [out] = LedgerHandler().handle([as_event(codec, "crypto.wallet.transfer.confirmed.v1", record)]).outputs
    posted = as_event(codec, out.topic, out.record)  # encodes: the record matches the schema
    lines = {(x["ledger_account"], x["side"], x["amount"]["units"]) for x in posted.record["lines"]}
    assert lines == {
        ("network_fees:tenant-1/ethereum:ETH", "DEBIT", GAS_WEI),
        ("custody:tenant-1/ethereum:ETH", "CREDIT", GAS_WEI),
    }
    assert posted.record["reference_id"] == f"gas:tenant-1/ethereum:{'0x' + 'ab' * 32}@{'0x' + 'cd' * 32}"
    # with the NETWORK line the fees agent charges for the same gas, the expense nets to zero
    [fee] = (
        FeesHandler(PRICING.fees)
        .handle([as_event(codec, "crypto.wallet.transfer.confirmed.v1", record)])
        .outputs
    )
    assessed = as_event(codec, fee.topic, fee.record)
    recovered = journal_for(assessed.topic, assessed.record)
    assert recovered is not None
    net = sum(
        (1 if line.side == "DEBIT" else -1) * line.units
        for journal in (recovered, journal_for("crypto.wallet.transfer.confirmed.v1", record))
        if journal is not None
        for line in journal.lines
        if line.account == "network_fees:tenant-1/ethereum:ETH"
    )
    assert net == 0


def test_an_outbound_transfer_reorged_out_reverses_its_gas_and_one_never_confirmed_posts_nothing():
    confirmed = outbound(**GAS)
    paid = journal_for("crypto.wallet.transfer.confirmed.v1", confirmed)
    reorged = {
        "metadata": metadata("crypto.wallet.transfer.reorged"),
        "account_id": confirmed["account_id"],
        "transfer": confirmed["transfer"],
        "replaced_by_block_hash": "0x" + "ef" * 32,
        "was_confirmed": True,
    }
    back = journal_for("crypto.wallet.transfer.reorged.v1", reorged)
    assert paid is not None and back is not None
    assert back.reference_id == f"reversal:{paid.reference_id}"
    assert {(x.account, x.side) for x in back.lines} == {
        ("network_fees:tenant-1/ethereum:ETH", "CREDIT"),
        ("custody:tenant-1/ethereum:ETH", "DEBIT"),
    }
    assert journal_for("crypto.wallet.transfer.reorged.v1", {**reorged, "was_confirmed": False}) is None


def test_an_outbound_transfer_without_gas_figures_posts_nothing_from_the_chain():
    assert journal_for("crypto.wallet.transfer.confirmed.v1", outbound()) is None
    assert (
        journal_for("crypto.wallet.transfer.confirmed.v1", outbound(gas_used=0, base_fee_per_gas=Decimal(7)))
        is None
    )


def test_gas_on_a_chain_without_a_native_asset_is_refused_not_guessed(codec):
    record = outbound(**GAS)
    record["transfer"]["chain"] = "base"
    record["transfer"]["amount"]["chain"] = "base"
    result = LedgerHandler().handle([as_event(codec, "crypto.wallet.transfer.confirmed.v1", record)])
    assert result.outputs == []
    [(_, reason)] = result.refused
    assert "no native asset configured for chain 'base'" in reason
