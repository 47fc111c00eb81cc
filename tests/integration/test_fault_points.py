"""#16's scenario 2 for an agent: a crash with the batch's outputs produced into the client's
queue but not flushed, and its offsets not committed (the fault hook `before_flush`, exiting as
a kill -9 would). The restart works the batch again; every output reaches its topic, and the
repeats carry the same event ids, which consumers drop."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.fixtures.kafka import fresh_topic, produce_raw, read_all
from topics.codec import AvroCodec
from topics.events import new_metadata
from topics.names import BILLING_FEE_ASSESSED_V1, PAYMENTS_TRANSACTION_COMPLETED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT

EVENTS = 3000


def completed(settings, codec: AvroCodec) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(EVENTS):
        account = f"acc-fault-{i % 50}"
        record = {
            "metadata": new_metadata(
                "payments.transaction.completed",
                tenant_id="tenant-1",
                environment=settings.environment,
                source="tests",
            ),
            "account_id": account,
            "transaction_id": f"fault-{uuid.uuid4().hex[:8]}-{i}",
            "transaction_type": "TRANSFER",
            "direction": "DEBIT",
            "amount": {"units": 10_000 + i, "currency": "EUR", "exponent": 2},
            "counterparty_account_id": None,
            "version": 7,
            "rail": "SEPA",
        }
        out.append((account.encode(), codec.encode(PAYMENTS_TRANSACTION_COMPLETED_V1, record)))
    return out


def fees_agent(settings, source: str, target: str, group: str, *extra: str, fault: str | None = None):
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SCHEMA_REGISTRY_URL": "",
    }
    env.pop("LEDGERSTREAM_FAULT", None)
    if fault is not None:
        env["LEDGERSTREAM_FAULT"] = fault
    command = [
        sys.executable,
        "-m",
        "ops.cli",
        "agent",
        "fees",
        "--topic",
        source,
        "--alias",
        f"{source}={PAYMENTS_TRANSACTION_COMPLETED_V1}",
        "--output-to",
        f"{BILLING_FEE_ASSESSED_V1}={target}",
        "--group",
        group,
        "--batch-size",
        "500",
        "--linger",
        "0.05",
        "--operator",
        *extra,
    ]
    return subprocess.run(command, env=env, capture_output=True, timeout=300)


def test_a_crash_before_the_outputs_are_flushed_loses_none_of_them(services):
    codec = AvroCodec(load_store(REPO_ROOT / "avro"))
    source, target = fresh_topic(services, "fault-in", 3), fresh_topic(services, "fault-out", 3)
    produce_raw(services, source, completed(services, codec))
    group = f"fault-{uuid.uuid4()}"

    first = fees_agent(services, source, target, group, fault="before_flush@2")
    assert first.returncode == 137, first.stderr.decode()[-2000:]
    assert b"fault: before_flush #2 reached" in first.stderr
    second = fees_agent(services, source, target, group, "--idle-exit", "3")
    assert second.returncode == 0, second.stderr.decode()[-2000:]

    fees = [codec.decode(m.value(), topic=BILLING_FEE_ASSESSED_V1) for m in read_all(services, target)]
    ids = {str(f["metadata"]["event_id"]) for f in fees}
    transactions = {f["transaction_id"] for f in fees}
    assert len(transactions) == EVENTS  # every completed transfer assessed: nothing lost
    assert len(ids) == len(transactions)  # one fee event id per transfer, repeats or not
