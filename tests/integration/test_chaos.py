"""`ledgerstream chaos`, a short set: each scenario runs the pipeline as supervised processes
under its seeded faults and must keep every invariant (I1-I5). The long run (every scenario,
many seeds) is `make chaos`.

The faults strike the local stack's own processes (the broker, PostgreSQL, Redis), which the
harness restarts; with containers there is nothing here to kill, and these are skipped.
"""

from __future__ import annotations

import psycopg
import pytest

from ops.dev.chaos import Chaos
from ops.dev.chaos_schedule import SCENARIOS
from ops.stack.services import Kafka
from tests.fixtures.database import private_database
from topics.codec import codec_from_settings

SHORT_SET = [
    ("kill-worker", 1),
    ("zombie", 1),
    ("postgres", 1),
    ("poison", 1),
]


def run_scenario(services, catalog, scenario: str, seed: int, transfers: int):
    """One chaos run on the local stack (skipped with containers): its result and what it said.

    Its workers are the catalog's groups: they consume every other test's events from the shared
    topics too, so they write to a database of their own, and the stack's database never gets
    postings for accounts that only the other tests' databases hold."""
    if Kafka(services.stack_dir, services.cache_dir).process.pid() is None:
        pytest.skip("the faults need the local stack's processes (`ledgerstream stack up`), not containers")
    codec = codec_from_settings(services)
    lines: list[str] = []
    try:
        with private_database(services) as db:
            return _run(db, codec, catalog, scenario, seed, transfers, lines), lines
    finally:
        codec.close()


def _run(settings, codec, catalog, scenario: str, seed: int, transfers: int, lines: list[str]):
    chaos = Chaos(
        settings,
        codec,
        catalog,
        SCENARIOS[scenario],
        seed,
        transfers=transfers,
        minutes=0.5,
        say=lines.append,
    )
    return chaos.run()


@pytest.mark.parametrize(("scenario", "seed"), SHORT_SET, ids=[f"{s}-seed{n}" for s, n in SHORT_SET])
def test_the_pipeline_keeps_every_invariant_under(services, catalog, scenario, seed):
    result, lines = run_scenario(services, catalog, scenario, seed, transfers=40)
    assert result.actions, f"{scenario}: no fault struck"
    assert result.verdict.inputs >= 40 + 8  # every transfer and every first deposit acknowledged
    assert result.verdict.effects > result.verdict.inputs
    assert result.ok, "\n".join([result.line(), *result.verdict.broken, *lines])


def test_broker_kill_seed_1_a_member_that_lost_its_group_while_paused_fetches_again(services, catalog):
    """Found by `chaos --scenario broker-kill --seed 1` at 10 transfers/s: with the broker away,
    workers paused their partitions to wait for their flushes, their sessions timed out and the
    partitions were revoked; the broker came back, the waits ended, the group gave the partitions
    back, and librdkafka kept them paused: the status and billing agents never fetched again
    (231 of 300 transfers left unfinished). An assignment now resumes its partitions (or keeps
    them paused while the worker still waits)."""
    result, lines = run_scenario(services, catalog, "broker-kill", 1, transfers=300)
    assert [a.split()[1] for a in result.actions] == ["service-kill", "service-start"]
    assert result.verdict.inputs >= 300 + 8
    assert result.ok, "\n".join([result.line(), *result.verdict.broken, *lines])


def test_postgres_seed_3_a_retry_that_meets_its_first_request_still_holding_the_key_is_sent_again(
    services, catalog
):
    """Found by `chaos --scenario postgres --seed 3`: PostgreSQL stalled under a transfer, the
    client's retry met the first request still working on its Idempotency-Key and got 409 ("still
    being processed", retry later), which the harness took for a refusal. A 409 is sent again."""
    from fastapi.testclient import TestClient

    from connectors.api import KEY_LOCK, create_app
    from connectors.auth import create_tenant, issue_key
    from ops.dev.chaos import send_until_answered
    from tests.fixtures.database import private_database
    from tests.fixtures.ledger import open_accounts

    codec = codec_from_settings(services)
    with (
        private_database(services) as db,
        psycopg.connect(db.database_url.get_secret_value(), autocommit=True) as conn,
        psycopg.connect(db.database_url.get_secret_value()) as first_request,
        TestClient(create_app(db.as_database_role("api"), codec, catalog)) as client,
    ):
        create_tenant(conn, "tenant-1", "Tenant One")
        token = issue_key(conn, "tenant-1", "alice", ["transfers:write"])[1]
        open_accounts(db, ["acc-chaos-409"])
        headers = {
            "Authorization": f"Bearer {token}",
            "x-environment": "sandbox",
            "Idempotency-Key": "chaos-key-409",
        }
        body = {
            "account_id": "acc-chaos-409",
            "amount": {"units": 1_000, "currency": "EUR", "exponent": 2},
            "rail": "SEPA",
            "beneficiary_reference": "GB33BUKB20201555555555",
        }
        assert first_request.execute(KEY_LOCK, ("tenant-1", "chaos-key-409")).fetchone()[
            0
        ]  # the first, stalled
        answers: list[int] = []

        def post():
            answer = client.post("/v1/transfers", json=body, headers=headers)
            answers.append(answer.status_code)
            if answer.status_code == 409:
                first_request.commit()  # the stall ends: the first request lets go of the key
            return answer

        answer = send_until_answered(post, deadline=30)
    codec.close()
    assert answers[0] == 409
    assert answer is not None and answer.status_code == 201, answers
