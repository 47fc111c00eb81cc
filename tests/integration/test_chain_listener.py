"""The chain listener against a real in-process EVM (eth-tester + py-evm) and the real stack."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest

from connectors.chain import CHAINS, ChainListener, ChainSpec, UnregisteredToken, WrongChain
from connectors.outbox import OutboxRelay
from ops.dev.evm_sandbox import start_sandbox
from tests.fixtures.database import private_database
from tests.fixtures.kafka import read_all
from topics.codec import AvroCodec
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
ETH = 10**18


@pytest.fixture(scope="module")
def codec():
    return AvroCodec(load_store(REPO_ROOT / "avro"))


@pytest.fixture(scope="module")
def db(services):
    with private_database(services) as settings:
        yield settings


@pytest.fixture
def chain(db):
    """A fresh EVM with the ERC-20 deployed and two watched wallets; (sandbox, conn, spec, accounts)."""
    sandbox = start_sandbox()
    spec = ChainSpec(f"ethereum-{uuid.uuid4().hex[:6]}", confirmations=3, native_asset="ETH")
    a = sandbox.accounts
    accounts = {a[1]: f"acc-chain-{RUN}-1", a[2]: f"acc-chain-{RUN}-2"}
    conn = psycopg.connect(db.database_url.get_secret_value(), autocommit=True)
    for address, account in accounts.items():
        conn.execute(
            "INSERT INTO chain_wallets VALUES (%s, %s, 'tenant-1', %s)", (spec.name, address.lower(), account)
        )
    token = sandbox.token.address.lower()
    conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (spec.name, token))
    conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 6)", (spec.name, token))
    yield sandbox, conn, spec, accounts
    conn.close()


def listener(db, codec, catalog, sandbox, spec):
    return ChainListener(
        db.as_database_role("chain_listener"),
        codec,
        catalog,
        sandbox.w3,
        spec,
        start_block=sandbox.w3.eth.block_number + 1,
    )


def events(conn, codec, spec, kind: str) -> list[dict]:
    rows = conn.execute(
        "SELECT topic, key, value FROM outbox WHERE topic = %s ORDER BY id",
        (f"crypto.wallet.transfer.{kind}.v1",),
    ).fetchall()
    out = []
    for topic, key, value in rows:
        record = codec.decode(bytes(value), topic=topic)
        if record["transfer"]["chain"] == spec.name:
            assert bytes(key) == record["account_id"].encode()
            out.append(record)
    return out


def test_transfers_are_detected_then_confirmed_after_n_blocks(db, codec, catalog, chain):
    sandbox, conn, spec, accounts = chain
    a = sandbox.accounts
    follower = listener(db, codec, catalog, sandbox, spec)
    native = sandbox.send_native(a[0], a[1], 3 * ETH // 2)
    token_in = sandbox.send_token(a[0], a[1], 1_234_567)
    between = sandbox.send_token(a[1], a[2], 500_000)  # both sides watched: two events
    sandbox.send_native(a[0], a[3], ETH)  # no watched wallet: nothing
    assert follower.catch_up(conn) == 4
    detected = events(conn, codec, spec, "detected")
    assert [(e["transfer"]["tx_hash"], e["account_id"], e["transfer"]["direction"]) for e in detected] == [
        (native, accounts[a[1]], "INBOUND"),
        (token_in, accounts[a[1]], "INBOUND"),
        (between, accounts[a[1]], "OUTBOUND"),
        (between, accounts[a[2]], "INBOUND"),
    ]
    first = detected[0]["transfer"]
    assert first["amount"] == {
        "units": Decimal(3 * ETH // 2),
        "asset": "ETH",
        "decimals": 18,
        "chain": spec.name,
    }
    assert first["log_index"] is None and first["token_contract"] is None
    token = detected[1]["transfer"]
    assert token["amount"]["units"] == Decimal(1_234_567) and token["amount"]["asset"] == "TUSD"
    assert token["log_index"] == 0 and token["token_contract"] == sandbox.token.address.lower()
    assert token["gas_used"] > 21_000 and token["base_fee_per_gas"] > 0 and token["priority_fee_per_gas"] >= 0
    assert all(e["confirmations"] == 1 for e in detected)
    # blocks n..n+3 were scanned: n and n+1 have their 3 confirmations, n+2 has 2
    confirmed = events(conn, codec, spec, "confirmed")
    assert [e["transfer"]["tx_hash"] for e in confirmed] == [native, token_in]
    assert [e["confirmations"] for e in confirmed] == [3, 3]
    sandbox.tester.mine_blocks(1)
    assert follower.catch_up(conn) == 1
    assert [e["transfer"]["tx_hash"] for e in events(conn, codec, spec, "confirmed")][2:] == [
        between,
        between,
    ]
    # a detection and its confirmation share the correlation id (one story in the audit trail)
    assert {e["metadata"]["correlation_id"] for e in detected} == {
        e["metadata"]["correlation_id"] for e in events(conn, codec, spec, "confirmed")
    }


def test_only_the_transfer_our_wallet_paid_gas_for_carries_the_gas(db, codec, catalog, chain):
    """A spender's `transferFrom` out of our wallet is OUTBOUND, but its gas was the spender's:
    neither the customer is charged nor custody debited for it."""
    sandbox, conn, spec, _ = chain
    a = sandbox.accounts
    follower = listener(db, codec, catalog, sandbox, spec)
    sandbox.send_token(a[0], a[1], 2_000_000)
    ours = sandbox.send_token(a[1], a[4], 300_000)  # a[1] sends and pays the gas
    approval = sandbox.token.functions.approve(a[3], 500_000).transact({"from": a[1]})
    sandbox.w3.eth.wait_for_transaction_receipt(approval)
    pulled = sandbox.token.functions.transferFrom(a[1], a[4], 500_000).transact({"from": a[3]})
    pulled = sandbox.w3.to_hex(sandbox.w3.eth.wait_for_transaction_receipt(pulled)["transactionHash"])
    follower.catch_up(conn)
    outbound = {
        e["transfer"]["tx_hash"]: e["transfer"]
        for e in events(conn, codec, spec, "detected")
        if e["transfer"]["direction"] == "OUTBOUND"
    }
    assert set(outbound) == {ours, pulled}
    assert outbound[ours]["gas_used"] > 21_000 and outbound[ours]["base_fee_per_gas"] > 0
    assert outbound[pulled]["gas_used"] is None
    assert outbound[pulled]["base_fee_per_gas"] is None and outbound[pulled]["priority_fee_per_gas"] is None


def test_a_node_of_another_chain_is_refused(db, codec, catalog, chain):
    sandbox, _, _, _ = chain
    with pytest.raises(WrongChain, match="not ethereum"):
        ChainListener(
            db.as_database_role("chain_listener"), codec, catalog, sandbox.w3, CHAINS["ethereum"]
        )  # eth-tester is not chain id 1


def test_a_restart_resumes_from_the_checkpoint_and_repeats_nothing(db, codec, catalog, chain):
    sandbox, conn, spec, _ = chain
    a = sandbox.accounts
    first = listener(db, codec, catalog, sandbox, spec)
    sandbox.send_native(a[0], a[1], ETH)
    first.catch_up(conn)
    assert len(events(conn, codec, spec, "detected")) == 1
    restarted = ChainListener(
        db.as_database_role("chain_listener"), codec, catalog, sandbox.w3, spec
    )  # no start block: the checkpoint decides
    assert restarted.catch_up(conn) == 0
    later = sandbox.send_token(a[0], a[2], 42)
    assert restarted.catch_up(conn) == 1
    assert [e["transfer"]["tx_hash"] for e in events(conn, codec, spec, "detected")][-1] == later
    assert len(events(conn, codec, spec, "detected")) == 2
    # rescanning old blocks (a checkpoint moved back by hand) reports nothing twice
    sandbox.tester.mine_blocks(3)
    restarted.catch_up(conn)
    before = {k: len(events(conn, codec, spec, k)) for k in ("detected", "confirmed")}
    conn.execute(
        "UPDATE chain_checkpoints c SET (block_number, block_hash) = (SELECT number, hash FROM chain_blocks b"
        " WHERE b.chain = c.chain ORDER BY number LIMIT 1) WHERE chain = %s",
        (spec.name,),
    )
    assert restarted.catch_up(conn) >= 4  # the later transfer's block and those confirming it, scanned again
    assert {k: len(events(conn, codec, spec, k)) for k in ("detected", "confirmed")} == before


def test_a_reorg_reports_the_vanished_transfer_and_never_confirms_it(db, codec, catalog, chain):
    sandbox, conn, spec, accounts = chain
    a = sandbox.accounts
    follower = listener(db, codec, catalog, sandbox, spec)
    kept = sandbox.send_native(a[0], a[1], ETH)
    sandbox.tester.mine_blocks(3)
    follower.catch_up(conn)
    assert [e["transfer"]["tx_hash"] for e in events(conn, codec, spec, "confirmed")] == [kept]
    snapshot = sandbox.tester.take_snapshot()
    doomed = sandbox.send_token(a[0], a[2], 777)
    follower.catch_up(conn)
    [seen] = [e for e in events(conn, codec, spec, "detected") if e["transfer"]["tx_hash"] == doomed]
    sandbox.tester.revert_to_snapshot(snapshot)  # the block holding it is replaced...
    sandbox.tester.mine_blocks(2)  # ...by a longer chain without it
    replacement = sandbox.send_native(a[0], a[2], 5)
    follower.catch_up(conn)
    [reorged] = events(conn, codec, spec, "reorged")
    assert reorged["transfer"]["tx_hash"] == doomed and reorged["account_id"] == accounts[a[2]]
    assert reorged["transfer"]["block_hash"] == seen["transfer"]["block_hash"]
    assert reorged["replaced_by_block_hash"] not in (None, seen["transfer"]["block_hash"])
    sandbox.tester.mine_blocks(4)
    follower.catch_up(conn)
    confirmed = [e["transfer"]["tx_hash"] for e in events(conn, codec, spec, "confirmed")]
    assert confirmed == [kept, replacement]  # the vanished one never confirmed; the first not twice
    status = dict(
        conn.execute("SELECT tx_hash, status FROM chain_transfers WHERE chain = %s", (spec.name,)).fetchall()
    )
    assert status == {kept: "confirmed", doomed: "reorged", replacement: "confirmed"}


def test_chain_events_reach_their_topics_as_avro_keyed_by_account(services, db, codec, catalog, chain):
    sandbox, conn, spec, accounts = chain
    a = sandbox.accounts
    follower = listener(db, codec, catalog, sandbox, spec)
    confirmed = sandbox.send_token(a[0], a[1], 10**6)
    sandbox.tester.mine_blocks(3)
    follower.catch_up(conn)
    snapshot = sandbox.tester.take_snapshot()
    reorged = sandbox.send_native(a[0], a[1], ETH)
    follower.catch_up(conn)
    sandbox.tester.revert_to_snapshot(snapshot)
    sandbox.tester.mine_blocks(2)
    follower.catch_up(conn)
    OutboxRelay(db, codec, catalog).run(idle_exit=1)
    expected = {"detected": [confirmed, reorged], "confirmed": [confirmed], "reorged": [reorged]}
    for kind, hashes in expected.items():
        topic = f"crypto.wallet.transfer.{kind}.v1"
        mine = [
            codec.decode(m.value(), topic=topic)
            for m in read_all(services, topic)
            if m.key() == accounts[a[1]].encode()
        ]
        assert [r["transfer"]["tx_hash"] for r in mine if r["transfer"]["chain"] == spec.name] == hashes, kind


def test_a_token_whose_decimals_differ_from_the_currency_registry_stops_the_listener(
    chain, db, codec, catalog
):
    sandbox, conn, spec, _ = chain
    other = ChainSpec(f"{spec.name}-x", confirmations=spec.confirmations, native_asset="ETH")
    token = sandbox.token.address.lower()
    conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (other.name, token))
    conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 18)", (other.name, token))
    with pytest.raises(UnregisteredToken, match=r"TUSD at 0x[0-9a-f]+ \(18 decimals; registry: 6\)"):
        listener(db, codec, catalog, sandbox, other).watched(conn)


def test_a_reorg_deeper_than_the_confirmations_reports_the_confirmed_transfer_for_reversal(
    db, codec, catalog, chain
):
    """Regression (issue 11): a confirmed deposit whose block was reorged out was only logged; its posting stood."""
    from streams.ledger.agent import journal_for

    sandbox, conn, spec, accounts = chain
    a = sandbox.accounts
    follower = listener(db, codec, catalog, sandbox, spec)
    sandbox.tester.mine_blocks(1)
    follower.catch_up(conn)  # a block both chains will share
    snapshot = sandbox.tester.take_snapshot()
    gone = sandbox.send_native(a[0], a[1], ETH)
    sandbox.tester.mine_blocks(spec.confirmations + 1)
    follower.catch_up(conn)
    [confirmed] = [e for e in events(conn, codec, spec, "confirmed") if e["transfer"]["tx_hash"] == gone]
    sandbox.tester.revert_to_snapshot(snapshot)  # every block since, the confirmations too, replaced
    sandbox.tester.mine_blocks(spec.confirmations + 4)  # by a longer chain without it
    follower.catch_up(conn)
    [reorged] = [e for e in events(conn, codec, spec, "reorged") if e["transfer"]["tx_hash"] == gone]
    assert reorged["was_confirmed"] is True and reorged["account_id"] == accounts[a[1]]
    status = conn.execute(
        "SELECT status FROM chain_transfers WHERE chain = %s AND tx_hash = %s", (spec.name, gone)
    )
    assert status.fetchall() == [("reorged",)]
    deposit = journal_for("crypto.wallet.transfer.confirmed.v1", confirmed)
    reversal = journal_for("crypto.wallet.transfer.reorged.v1", reorged)
    assert deposit is not None and reversal is not None
    assert reversal.reverses == deposit.reference_id
    assert [(ln.account, ln.side) for ln in reversal.lines] == [
        (ln.account, "CREDIT" if ln.side == "DEBIT" else "DEBIT") for ln in deposit.lines
    ]
