"""`ledgerstream run`: workers as supervised processes, brought up and down, restarted when killed.

The run here is a subset (the transfer-request sink and the outbox relay) in a folder of its
own, with metrics ports of its own, so it never meets a developer's run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.supervise import Supervisor
from tests.fixtures.events import transfer_requested
from tests.fixtures.kafka import produce_raw
from tests.fixtures.services import service_environment
from tests.fixtures.waiting import wait_for
from topics.codec import AvroCodec
from topics.consuming import start_at_end
from topics.schemas import load_store
from topics.settings import REPO_ROOT

TOPIC = "payments.transfer.requested.v1"
GROUP = "ledgerstream.transfers_sink"


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    for base in range(24_000 + os.getpid() % 1000 * 8, 40_000, 8):
        try:
            socks = []
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free ports")


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus exposition, by name and labels."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def broker_offsets(settings, partition: int) -> tuple[int, int]:
    """(the group's committed offset, the partition's high watermark) as the broker has them."""
    admin = AdminClient(settings.kafka_config())
    result = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(GROUP, [TopicPartition(TOPIC, partition)])]
    )
    committed = result[GROUP].result().topic_partitions[0].offset
    consumer = Consumer(settings.kafka_config(**{"group.id": f"test-watermarks-{uuid.uuid4()}"}))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
    finally:
        consumer.close()
    return committed, high


def test_run_brings_workers_up_restarts_a_killed_one_and_stops_them(services, catalog, tmp_path: Path):
    env, folder, base = service_environment(services), tmp_path / "run", free_ports(2)
    start_at_end(services, GROUP, [TOPIC])  # only what this test sends, not other tests' history
    started = cli(
        env,
        "run",
        "--detach",
        "--only",
        "transfers,outbox_relay",
        "--dir",
        str(folder),
        "--metrics-base",
        str(base),
    )
    supervisor = Supervisor(folder)
    try:
        assert started.returncode == 0, started.stderr
        states = {s.name: s for s in supervisor.states()}
        assert set(states) == {"transfers_sink", "outbox_relay"}
        assert all(s.state == "RUNNING" for s in states.values())
        assert "transfers_sink" in cli(env, "run", "status", "--dir", str(folder)).stdout

        # events reach the table, and the worker's lag figures are the broker's
        codec = AvroCodec(load_store(REPO_ROOT / "avro"))
        account = f"acc-run-{uuid.uuid4().hex[:8]}"
        records = [transfer_requested(account, 100 + i) for i in range(40)]
        produce_raw(services, TOPIC, [(account.encode(), codec.encode(TOPIC, r)) for r in records])
        url = services.database_url.get_secret_value()
        with psycopg.connect(url, autocommit=True) as conn:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM transfer_requests WHERE account_id = %s", (account,)
                    ).fetchone()[0]
                    == 40
                ),
                60,
                what="the run's sink to write",
            )
        partition = catalog.topic(TOPIC).partitions  # the account's partition: where the sink committed
        partition = -1 + wait_for(
            lambda: next(
                (
                    p + 1
                    for p in range(partition)
                    if metric(
                        httpx.get(f"http://127.0.0.1:{base}/metrics").text,
                        "kafka_consumergroup_current_offset",
                        consumergroup=GROUP,
                        topic=TOPIC,
                        partition=str(p),
                    )
                    is not None
                ),
                None,
            ),
            30,
            what="the sink to report a committed offset",
        )

        def lag_agrees() -> bool:
            text = httpx.get(f"http://127.0.0.1:{base}/metrics").text
            committed, high = broker_offsets(services, partition)
            labels = {"consumergroup": GROUP, "topic": TOPIC, "partition": str(partition)}
            return (
                metric(text, "kafka_consumergroup_current_offset", **labels) == committed
                and metric(text, "kafka_consumergroup_lag", **labels) == high - committed
            )

        wait_for(lag_agrees, 30, what="the scraped offset and lag to match the broker's")
        relay = httpx.get(f"http://127.0.0.1:{base + 1}/readyz")
        assert relay.status_code == 200 and relay.json()["database"] is True

        # kill -9: supervisord starts it again and counts the restart
        victim = states["transfers_sink"].pid
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            now = {s.name: s for s in supervisor.states()}["transfers_sink"]
            return now.state == "RUNNING" and now.pid not in (0, victim) and now.restarts == 1

        wait_for(restarted, 60, what="supervisord to restart the killed sink")
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{base}/readyz").status_code == 200,
            90,
            what="the restarted sink to rejoin its group",
        )

        # one worker stopped and started again while the rest run on (an offsets reset's window)
        paused = cli(env, "run", "stop", "--only", "transfers", "--dir", str(folder))
        assert paused.returncode == 0, paused.stderr
        now = {s.name: s.state for s in supervisor.states()}
        assert now == {"transfers_sink": "STOPPED", "outbox_relay": "RUNNING"}
        assert cli(env, "run", "status", "--dir", str(folder)).returncode == 1
        resumed = cli(env, "run", "--only", "transfers", "--dir", str(folder))
        assert resumed.returncode == 0, resumed.stderr
        assert {s.name: s.state for s in supervisor.states()}["transfers_sink"] == "RUNNING"
        pids = [s.pid for s in supervisor.states()]
    finally:
        stopped = cli(env, "run", "stop", "--dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert supervisor.pid() is None
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "a worker outlived the run"
    again = cli(env, "run", "status", "--dir", str(folder))
    assert again.returncode == 1 and "no run is going" in again.stderr
