"""Providers move transfers, not the demo: reserved transfers are paid out by the dispatcher, and
the provider's signed webhooks (from the project's provider sandbox) complete or fail them."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from functools import partial

import psycopg
import pytest

from connectors.outbox import OutboxRelay
from connectors.payouts import PayoutDispatcher, TrueLayerPayouts
from connectors.provider_sandbox import create_sandbox
from connectors.webhooks.app import create_app as create_webhooks
from ops import webhook_senders as send
from ops.serving import serving
from tests.fixtures.database import private_database
from tests.fixtures.events import transfer_requested
from tests.fixtures.ledger import money_groups_at_end, money_workers, open_accounts
from tests.fixtures.running import running
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.producer import EventProducer
from topics.schemas import load_store
from topics.settings import REPO_ROOT

RUN = uuid.uuid4().hex[:8]
PAID, BOUNCED = f"po-{RUN}-paid", f"po-{RUN}-bounced"


def history(conn, tid: str) -> list[tuple]:
    return conn.execute(
        "SELECT to_status, provider_update_id, reason FROM transaction_status_history WHERE transaction_id = %s "
        "ORDER BY version",
        (tid,),
    ).fetchall()


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
        hooks = stack.enter_context(serving(create_webhooks(db, keys.settings(), codec, catalog)))
        sandbox = stack.enter_context(
            serving(
                create_sandbox(
                    f"{hooks}/v1/webhooks/truelayer", lambda body, path: keys.truelayer(body, path)
                )
            )
        )
        client = TrueLayerPayouts(sandbox, "ma-ledgerstream")
        stack.callback(client.close)
        dispatcher = PayoutDispatcher(db, codec, catalog, client)
        for work in (
            *money_workers(db, codec, catalog, group),
            partial(OutboxRelay(db, codec, catalog).run, poll=0.05),
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
        producer.flush()
        final = "SELECT transaction_id, status FROM transactions WHERE transaction_id = ANY(%s) ORDER BY 1"
        wait_for(lambda: conn.execute(final, ([PAID, BOUNCED],)).fetchall() == [(BOUNCED, "FAILED"), (PAID, "COMPLETED")],
                 60, what="the provider's webhooks to settle both transfers")  # fmt: skip
        wait_for(lambda: conn.execute("SELECT status FROM holds WHERE hold_id = %s", (f"txn:{PAID}",)).fetchone()
                 == ("COMPLETED",), 60, what="the paid transfer posted")  # fmt: skip
        yield db, conn, dispatcher, client


def test_a_paid_out_transfer_records_each_step_with_the_provider_update_that_caused_it(paid_out):
    _, conn, _, _ = paid_out
    steps = history(conn, PAID)
    assert [s[0] for s in steps] == [
        "INITIATED", "VALIDATING", "BALANCE_RESERVED", "SENT_TO_PROVIDER", "PROVIDER_PROCESSING",
        "PROVIDER_CONFIRMING", "COMPLETED",
    ]  # fmt: skip
    assert steps[3][2] == "payout requested from truelayer"
    executed = {s[1] for s in steps[4:]}
    assert len(executed) == 1 and None not in executed  # one payout_executed webhook moved three steps
    assert all(s[2].startswith("truelayer payout_executed") for s in steps[4:])
    journal = conn.execute("SELECT count(*) FROM journal_entries WHERE reference_id = %s", (f"txn:{PAID}",))
    assert journal.fetchone() == (1,)


def test_a_failed_payout_fails_its_transfer_and_releases_the_hold(paid_out):
    _, conn, _, _ = paid_out
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
    _, conn, dispatcher, client = paid_out
    rows = conn.execute(
        "SELECT transaction_id, status, payout_id IS NOT NULL FROM payouts WHERE transaction_id = ANY(%s) ORDER BY 1",
        ([PAID, BOUNCED],),
    ).fetchall()
    assert rows == [(BOUNCED, "sent", True), (PAID, "sent", True)]
    assert dispatcher.claim(conn) == 0 and dispatcher.send(conn) == 0
    # the provider answers a resent request (a dispatcher that died before recording the answer) with the same payout
    payout_id = conn.execute("SELECT payout_id FROM payouts WHERE transaction_id = %s", (PAID,)).fetchone()[0]
    from connectors.payouts import Payout

    again = client.create_payout(Payout(PAID, "tenant-1", f"acc-{RUN}", 10_000, "EUR", 2, "SEPA"))
    assert again == payout_id
