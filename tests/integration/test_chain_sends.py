"""Money out on a chain posts through its transfer's lifecycle, on a real in-process EVM.

A reserved CRYPTO transfer is signed and broadcast by the chain sender; the chain listener
sees it leave the account's wallet (PROVIDER_PROCESSING) and, once confirmed, completes it
(PROVIDER_CONFIRMING, COMPLETED), and the ledger posts it once, against the chain's custody
account. Money that leaves a watched wallet any other way is reported for reconciliation by
`ledger check` and never posted.
"""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from decimal import Decimal
from functools import partial

import psycopg
import pytest
from eth_utils import to_checksum_address

from connectors.chain import ChainListener, ChainSpec
from connectors.chain_sender import ChainSender, LocalKeys
from connectors.outbox import OutboxRelay
from ops.dev.evm_sandbox import start_sandbox
from ops.ledger_check import violations
from tests.fixtures.database import private_database
from tests.fixtures.events import TRAVEL_RULE, transfer_requested
from tests.fixtures.ledger import history, money_groups_at_end, money_workers, open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.fields import TRANSACTIONS_TRAVEL_RULE, open_field
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
ACCOUNT = f"acc-send-{RUN}"
SENT, REFUSED, UNNAMED = f"cs-{RUN}-sent", f"cs-{RUN}-refused", f"cs-{RUN}-unnamed"
DEPOSIT, SEND, STRAY = 5_000_000, 2_000_000, 100_000
CONFIRMATIONS = 3


def balance(conn, code: str) -> tuple[int, int]:
    row = conn.execute("SELECT debits, credits FROM balances WHERE ledger_account = %s", (code,)).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@pytest.fixture(scope="module")
def sent(services, catalog):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    sandbox = start_sandbox()
    spec = ChainSpec(f"ethereum-{RUN}", confirmations=CONFIRMATIONS, native_asset="ETH")
    a = sandbox.accounts
    wallet, beneficiary, stranger = a[1], a[5], a[6]
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        token = sandbox.token.address.lower()
        conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (spec.name, token))
        conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 6)", (spec.name, token))
        conn.execute(
            "INSERT INTO chain_wallets VALUES (%s, %s, 'tenant-1', %s)", (spec.name, wallet.lower(), ACCOUNT)
        )
        open_accounts(db, [ACCOUNT], "TUSD")
        group = f"chain-sends-{RUN}"
        money_groups_at_end(db, catalog, group)
        for work in (
            *money_workers(db, codec, catalog, group),
            partial(OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run, poll=0.05),
        ):
            stack.enter_context(running(work))
        listener = ChainListener(
            db, codec, catalog, sandbox.w3, spec, start_block=sandbox.w3.eth.block_number + 1
        )
        keys = {
            to_checksum_address(k.public_key.to_checksum_address()): k.to_bytes()
            for k in sandbox.tester.backend.account_keys
        }
        sender = ChainSender(
            db.as_database_role("chain_sender"), codec, catalog, sandbox.w3, spec, LocalKeys(keys)
        )

        def drive(condition, what: str):
            """The chain side runs here, in one thread (eth-tester is not thread-safe): sign, broadcast,
            follow the chain, and mine a block now and then until `condition` holds."""

            def step():
                sender.step(conn)
                listener.catch_up(conn)
                if condition():
                    return True
                sandbox.tester.mine_blocks(1)
                return False

            wait_for(step, 60, interval=0.1, what=what)

        customer = f"customer:tenant-1/{ACCOUNT}:TUSD"
        sandbox.send_token(a[0], wallet, DEPOSIT)
        drive(lambda: balance(conn, customer)[1] == DEPOSIT, "the deposit posted")
        producer = EventProducer(db, codec, catalog)
        tusd = {"units": Decimal(SEND), "asset": "TUSD", "decimals": 6, "chain": spec.name}
        producer.produce(
            "payments.transfer.requested.v1",
            transfer_requested(
                ACCOUNT,
                transfer_id=SENT,
                amount=tusd,
                rail="CRYPTO",
                beneficiary_reference=beneficiary.lower(),
                travel_rule=TRAVEL_RULE,
            ),
        )
        producer.produce(
            "payments.transfer.requested.v1",
            transfer_requested(
                ACCOUNT,
                transfer_id=REFUSED,
                amount={**tusd, "units": Decimal(1_000)},
                rail="CRYPTO",
                beneficiary_reference="not an address",
                travel_rule=TRAVEL_RULE,
            ),
        )
        producer.produce(  # straight to the topic, past the API that would refuse it
            "payments.transfer.requested.v1",
            transfer_requested(
                ACCOUNT,
                transfer_id=UNNAMED,
                amount={**tusd, "units": Decimal(1_000)},
                rail="CRYPTO",
                beneficiary_reference=beneficiary.lower(),
            ),
        )
        producer.flush()
        final = "SELECT transaction_id, status FROM transactions WHERE transaction_id = ANY(%s) ORDER BY 1"
        settled = sorted([(SENT, "COMPLETED"), (REFUSED, "FAILED"), (UNNAMED, "FAILED")])
        drive(
            lambda: conn.execute(final, ([SENT, REFUSED, UNNAMED],)).fetchall() == settled,
            "the transfers settled",
        )
        stray = sandbox.send_token(wallet, stranger, STRAY)  # out of the wallet, but no transfer sent it
        drive(
            lambda: (
                conn.execute(
                    "SELECT status FROM chain_transfers WHERE chain = %s AND tx_hash = %s", (spec.name, stray)
                ).fetchone()
                == ("confirmed",)
            ),
            "the stray transfer confirmed",
        )
        custody = f"custody:tenant-1/{spec.name}:TUSD"
        wait_for(
            lambda: balance(conn, custody) == (DEPOSIT, SEND), 60, what="the send posted against custody"
        )
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone() == (0,),
            60,
            what="the outbox relay",
        )
        yield db, conn, codec, sandbox, spec, stray, wallet, beneficiary


def test_a_sent_transfer_moves_through_each_step_with_the_chain_update_that_caused_it(sent):
    _, conn, _, _, spec, *_ = sent
    steps = history(conn, SENT)
    assert [s[0] for s in steps] == [
        "INITIATED",
        "VALIDATING",
        "BALANCE_RESERVED",
        "SENT_TO_PROVIDER",
        "PROVIDER_PROCESSING",
        "PROVIDER_CONFIRMING",
        "COMPLETED",
    ]
    tx_hash = conn.execute("SELECT tx_hash FROM chain_sends WHERE transaction_id = %s", (SENT,)).fetchone()[0]
    assert steps[3][2] == f"signed {tx_hash} on {spec.name}"
    assert {s[1] for s in steps[4:]} == {steps[4][1]} and steps[4][1].startswith(f"{tx_hash}@0x")
    assert conn.execute("SELECT status FROM chain_sends WHERE transaction_id = %s", (SENT,)).fetchone() == (
        "confirmed",
    )


def test_the_money_left_on_chain_once_and_posted_once_against_custody(sent):
    _, conn, _, sandbox, spec, _, wallet, beneficiary = sent
    assert sandbox.token.functions.balanceOf(to_checksum_address(beneficiary)).call() == SEND
    assert sandbox.token.functions.balanceOf(wallet).call() == DEPOSIT - SEND - STRAY
    lines = conn.execute(
        "SELECT e.ledger_account, e.side, e.amount FROM entries e JOIN journal_entries j USING (journal_entry_id) "
        "WHERE j.reference_id = %s ORDER BY e.side",
        (f"txn:{SENT}",),
    ).fetchall()
    assert [(a, s, int(n)) for a, s, n in lines] == [
        (f"custody:tenant-1/{spec.name}:TUSD", "CREDIT", SEND),
        (f"customer:tenant-1/{ACCOUNT}:TUSD", "DEBIT", SEND),
    ]
    assert conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{SENT}",)).fetchone() == (
        "COMPLETED",
    )


def test_a_transfer_that_cannot_be_sent_fails_and_releases_its_hold(sent):
    _, conn, *_ = sent
    steps = history(conn, REFUSED)
    assert [s[0] for s in steps][-2:] == ["BALANCE_RESERVED", "FAILED"]
    assert "is not an address" in steps[-1][2]
    assert conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{REFUSED}",)).fetchone() == (
        "RELEASED",
    )
    assert conn.execute(
        "SELECT status, tx_hash FROM chain_sends WHERE transaction_id = %s", (REFUSED,)
    ).fetchone() == (
        "refused",
        None,
    )


def test_a_crypto_transfer_without_its_travel_rule_data_fails_before_anything_is_held_or_sent(sent):
    _, conn, *_ = sent
    steps = history(conn, UNNAMED)
    assert [s[0] for s in steps] == ["INITIATED", "VALIDATING", "FAILED"]
    assert steps[-1][2].startswith("TRAVEL_RULE_MISSING:")
    assert conn.execute("SELECT count(*) FROM holds WHERE hold_id = %s", (f"txn:{UNNAMED}",)).fetchone() == (
        0,
    )
    assert conn.execute(
        "SELECT count(*) FROM chain_sends WHERE transaction_id = %s", (UNNAMED,)
    ).fetchone() == (0,)


def test_a_crypto_transfers_travel_rule_data_is_kept_with_it_only_sealed(sent):
    db, conn, *_ = sent
    kept = dict(
        conn.execute(
            "SELECT transaction_id, travel_rule_sealed FROM transactions WHERE transaction_id = ANY(%s)",
            ([SENT, UNNAMED],),
        ).fetchall()
    )
    assert json.loads(open_field(db.field_key(), kept[SENT], TRANSACTIONS_TRAVEL_RULE)) == TRAVEL_RULE
    assert kept[UNNAMED] is None
    as_text = conn.execute(
        "SELECT count(*) FROM transactions t WHERE row_to_json(t)::text LIKE %s",
        (f"%{TRAVEL_RULE['originator_name']}%",),
    ).fetchone()[0]
    assert as_text == 0  # no name readable in the table


def test_money_out_that_no_transfer_sent_is_reported_for_reconciliation_and_not_posted(sent):
    _, conn, codec, _, _, stray, *_ = sent
    found = [v for v in violations(conn, codec) if v.rule == "chain sends matched"]
    assert len(found) == 1 and stray in found[0].detail and "reconcile" in found[0].detail
    assert conn.execute(
        "SELECT count(*) FROM journal_entries WHERE reference_id LIKE %s", (f"%{stray}%",)
    ).fetchone() == (0,)


def test_the_sender_never_signs_a_transfer_twice(sent, catalog):
    db, conn, codec, sandbox, spec, *_ = sent
    again = ChainSender(
        db.as_database_role("chain_sender"), codec, catalog, sandbox.w3, spec, LocalKeys({})
    )  # no keys: it could sign nothing
    assert again.claim(conn) == 0 and again.broadcast(conn) == 0
    assert conn.execute(
        "SELECT count(*) FROM chain_sends WHERE transaction_id = ANY(%s)", ([SENT, REFUSED],)
    ).fetchone() == (2,)
