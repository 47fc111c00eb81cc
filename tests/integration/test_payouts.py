"""Providers move transfers, not the demo: reserved transfers are paid out by the dispatcher, and
the provider's signed webhooks (from the project's provider sandbox) complete or fail them."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from functools import partial

import psycopg
import pytest

from connectors.outbox import OutboxRelay
from connectors.payouts import CirclePayouts, PayoutDispatcher, TrueLayerPayouts
from connectors.webhooks.app import create_app as create_webhooks
from ops.dev import webhook_senders as send
from ops.dev.provider_sandbox import create_sandbox
from ops.dev.serving import serving
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.ledger import history, money_groups_at_end, money_workers, open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
PAID, BOUNCED = f"po-{RUN}-paid", f"po-{RUN}-bounced"
WIRED, REFUSED = f"po-{RUN}-circle-paid", f"po-{RUN}-circle-refused"
USD_ACCOUNT = f"acc-{RUN}-usd"
ALL = [PAID, BOUNCED, WIRED, REFUSED]


@pytest.fixture(scope="module")
def paid_out(services, catalog):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    keys = send.ProviderKeys()
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        ExitStack() as stack,
    ):
        group = f"payouts-{RUN}"
        money_groups_at_end(db, catalog, group)
        open_accounts(db, [f"acc-{RUN}"], overdraft=1_000_000)
        open_accounts(db, [USD_ACCOUNT], "USD", overdraft=1_000_000)
        hooks = stack.enter_context(serving(create_webhooks(db, keys.settings(), codec, catalog)))
        sandbox = stack.enter_context(
            serving(
                create_sandbox(
                    f"{hooks}/v1/webhooks/truelayer",
                    lambda body, path: keys.truelayer(body, path),
                    keys.payouts(),
                    circle_url=f"{hooks}/v1/webhooks/circle",
                    circle_sign=lambda body, path: keys.circle(body),
                )
            )
        )
        client = TrueLayerPayouts(sandbox, "ma-ledgerstream", keys.payouts().truelayer)
        stack.callback(client.close)
        circle = CirclePayouts(sandbox, str(uuid.uuid4()), str(uuid.uuid4()), keys.circle_api_key)
        stack.callback(circle.close)
        dispatcher = PayoutDispatcher(
            db.as_database_role("payout_dispatcher"),
            codec,
            catalog,
            {"SEPA": client, "FASTER_PAYMENTS": client, "ACH": circle},
        )
        for work in (
            *money_workers(db, codec, catalog, group),
            partial(OutboxRelay(db.as_database_role("outbox_relay"), codec, catalog).run, poll=0.05),
            partial(dispatcher.run, poll=0.05),
        ):
            stack.enter_context(running(work))
        producer = EventProducer(db, codec, catalog)
        producer.produce(
            "payments.transfer.requested.v1", transfer_requested(f"acc-{RUN}", 10_000, transfer_id=PAID)
        )
        producer.produce(
            "payments.transfer.requested.v1", transfer_requested(f"acc-{RUN}", 10_013, transfer_id=BOUNCED)
        )  # the sandbox fails amounts ending in 13
        for tid, units in ((WIRED, 25_000), (REFUSED, 25_013)):
            usd = {"units": units, "currency": "USD", "exponent": 2}
            producer.produce(
                "payments.transfer.requested.v1",
                transfer_requested(USD_ACCOUNT, transfer_id=tid, amount=usd, rail="ACH"),
            )
        producer.flush()
        final = "SELECT transaction_id, status FROM transactions WHERE transaction_id = ANY(%s) ORDER BY 1"
        settled = sorted(
            [(BOUNCED, "FAILED"), (PAID, "COMPLETED"), (REFUSED, "FAILED"), (WIRED, "COMPLETED")]
        )
        wait_for(
            lambda: conn.execute(final, (ALL,)).fetchall() == settled,
            60,
            what="the providers' webhooks to settle every transfer",
        )
        wait_for(
            lambda: (
                conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{PAID}",)).fetchone()
                == ("COMPLETED",)
            ),
            60,
            what="the paid transfer posted",
        )
        wait_for(
            lambda: (
                conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{WIRED}",)).fetchone()
                == ("COMPLETED",)
            ),
            60,
            what="the wired transfer posted",
        )
        yield db, conn, dispatcher, client, hooks, keys


def test_a_paid_out_transfer_records_each_step_with_the_provider_update_that_caused_it(paid_out):
    _, conn, *_ = paid_out
    steps = history(conn, PAID)
    assert [s[0] for s in steps] == [
        "INITIATED",
        "VALIDATING",
        "BALANCE_RESERVED",
        "SENT_TO_PROVIDER",
        "PROVIDER_PROCESSING",
        "PROVIDER_CONFIRMING",
        "COMPLETED",
    ]
    assert steps[3][2] == "payout requested from truelayer"
    executed = {s[1] for s in steps[4:]}
    assert len(executed) == 1 and None not in executed  # one payout_executed webhook moved three steps
    assert all(s[2].startswith("truelayer payout_executed") for s in steps[4:])
    journal = conn.execute("SELECT count(*) FROM journal_entries WHERE reference_id = %s", (f"txn:{PAID}",))
    assert journal.fetchone() == (1,)


def test_a_failed_payout_fails_its_transfer_and_releases_the_hold(paid_out):
    _, conn, *_ = paid_out
    steps = history(conn, BOUNCED)
    assert [s[0] for s in steps][-2:] == ["SENT_TO_PROVIDER", "FAILED"]
    assert "insufficient_funds" in steps[-1][2] and steps[-1][1] is not None
    assert conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{BOUNCED}",)).fetchone() == (
        "RELEASED",
    )
    assert conn.execute(
        "SELECT count(*) FROM journal_entries WHERE reference_id = %s", (f"txn:{BOUNCED}",)
    ).fetchone() == (0,)


def test_each_transfer_is_paid_out_once_even_when_the_dispatcher_runs_again(paid_out):
    _, conn, dispatcher, client, *_ = paid_out
    rows = conn.execute(
        "SELECT transaction_id, provider, status, payout_id IS NOT NULL FROM payouts WHERE transaction_id = ANY(%s) "
        "ORDER BY 1",
        (ALL,),
    ).fetchall()
    assert rows == sorted(
        [
            (BOUNCED, "truelayer", "sent", True),
            (PAID, "truelayer", "sent", True),
            (REFUSED, "circle", "sent", True),
            (WIRED, "circle", "sent", True),
        ]
    )
    assert dispatcher.claim(conn) == 0 and dispatcher.send(conn) == 0
    # the provider answers a resent request (a dispatcher that died before recording the answer) with the same payout
    payout_id = conn.execute("SELECT payout_id FROM payouts WHERE transaction_id = %s", (PAID,)).fetchone()[0]
    from connectors.payouts import Payout

    again = client.create_payout(Payout(PAID, "tenant-1", f"acc-{RUN}", 10_000, "EUR", 2, "SEPA"))
    assert again == payout_id


def test_a_circle_payout_completes_or_fails_its_transfer_with_each_step(paid_out):
    _, conn, *_ = paid_out
    wired = history(conn, WIRED)
    assert [s[0] for s in wired][3:] == [
        "SENT_TO_PROVIDER",
        "PROVIDER_PROCESSING",
        "PROVIDER_CONFIRMING",
        "COMPLETED",
    ]
    assert wired[3][2] == "payout requested from circle"
    assert len({s[1] for s in wired[4:]}) == 1 and all(s[2].endswith(" complete") for s in wired[4:])
    refused = history(conn, REFUSED)
    assert [s[0] for s in refused][-2:] == ["SENT_TO_PROVIDER", "FAILED"]
    assert refused[-1][2].endswith("failed: insufficient_funds")
    assert conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{REFUSED}",)).fetchone() == (
        "RELEASED",
    )
    posted = conn.execute(
        "SELECT reference_id, count(*) FROM journal_entries WHERE reference_id = ANY(%s) GROUP BY 1 ORDER BY 1",
        ([f"txn:{WIRED}", f"txn:{REFUSED}"],),
    ).fetchall()
    assert posted == [(f"txn:{WIRED}", 1)]  # once, by the transfer: no bank debit besides


def test_a_circle_payout_that_is_not_ours_is_refused_for_redelivery_and_writes_nothing(paid_out):
    import httpx

    _, conn, _, _, hooks, keys = paid_out
    notice = send.circle_payment(str(uuid.uuid4()), "10.00", kind="payouts", status="complete")
    body = send.encode(notice)
    answer = httpx.post(
        f"{hooks}/v1/webhooks/circle",
        content=body,
        headers={"content-type": "application/json", **keys.circle(body)},
    )
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert conn.execute(
        "SELECT count(*) FROM webhook_inbox WHERE provider = 'circle' AND event_id = %s",
        (notice["notificationId"],),
    ).fetchone() == (0,)


def test_reserving_and_releasing_announce_the_account_balance(paid_out):
    _, conn, *_ = paid_out
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    account = f"acc-{RUN}"
    posted = conn.execute(
        "SELECT credits - debits FROM balances WHERE ledger_account = %s",
        (f"customer:tenant-1/{account}:EUR",),
    ).fetchone()[0]

    def announced() -> list[dict]:
        rows = conn.execute(
            "SELECT value FROM outbox WHERE topic = 'accounts.balance.updated.v1' AND key = %s ORDER BY id",
            (account.encode(),),
        ).fetchall()
        return [codec.decode(bytes(r[0]), topic="accounts.balance.updated.v1") for r in rows]

    by_status = [e for e in announced() if e["metadata"]["source"] == "streams.status"]
    held = [e["reserved"]["units"] for e in by_status]
    assert any(units > 0 for units in held), held  # a reservation is announced when it is placed
    bounced = [e for e in by_status if e["journal_entry_id"] == f"txn:{BOUNCED}"]
    assert bounced  # and its release
    [work] = conn.execute(
        "SELECT correlation_id FROM transactions WHERE transaction_id = %s", (BOUNCED,)
    ).fetchone()
    assert {e["metadata"]["correlation_id"] for e in bounced} == {work}  # under the transfer's correlation
    settled = wait_for(
        lambda: [e for e in announced() if e["reserved"]["units"] == 0 and e["total"]["units"] == posted],
        30,
        what="the settled balance announced",
    )
    assert settled[-1]["available"]["units"] == posted + 1_000_000  # the overdraft limit
