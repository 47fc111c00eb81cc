"""`ledgerstream bench e2e --rate 2000 --seconds 60`: a signed webhook's way to its ledger row.

The path measured, each stage its own process, on a scratch database:
1. `connect webhooks` verifies a Stripe `charge.succeeded` (a card load) and keeps it, with
   its event in the outbox, in one transaction;
2. `connect outbox-relay` publishes it to `cards.transaction.received.v1`;
3. `agent ledger` posts it to `ledger.journal.posted.v1`;
4. `sink ledger` writes the journal entry.

Deliveries are sent open-loop at `--rate` per second (each on its schedule, whatever the
answers take), so a slow stage shows as latency, not as a lower rate. A poller sees each
journal row as soon as it is committed; a delivery's latency is from its send to that
moment (the bench indexes `recorded_at` in its scratch database for that poller). The
agent's and the sink's consumer lag is sampled every second from their `/metrics`. Every
event goes to scratch copies of the card, journal and balance topics (the relay redirects,
the agent and the sink read a copy as the topic it stands for), deleted afterwards: the real
topics see nothing of the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import httpx
import psycopg

from ops.dev import webhook_senders as send
from ops.dev.bench import BenchError, _drop_topic, _scratch_topic
from ops.dev.bench_webhooks import service_environment
from ops.dev.serving import free_port
from ops.process_stats import tree_cpu_seconds
from ops.stack import Stack
from ops.stack.process import wait_until
from sinks.migrate import scratch_database
from topics.catalog import Catalog
from topics.names import ACCOUNTS_BALANCE_UPDATED_V1, CARDS_TRANSACTION_RECEIVED_V1, LEDGER_JOURNAL_POSTED_V1
from topics.settings import REPO_ROOT, Settings

TENANT = "tenant-bench"
CARDS = CARDS_TRANSACTION_RECEIVED_V1
POSTED = LEDGER_JOURNAL_POSTED_V1
BALANCES = ACCOUNTS_BALANCE_UPDATED_V1
CUSTOMERS = 200
MAX_SECONDS = 240
STAGES = ("webhooks", "outbox relay", "ledger agent", "ledger sink")
"""The processes `_measure` starts, in its order."""


@dataclass
class E2eResult:
    rate: int
    seconds: int
    workers: int
    sent: int = 0
    refused: int = 0
    posted: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    achieved_per_s: float = 0.0
    first_refusal: str = ""
    answered_ms: list[float] = field(default_factory=list)
    max_lag: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    window_seconds: float = 0.0

    def _pct(self, q: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies_ms if values is None else values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def lines(self) -> list[str]:
        lags = ", ".join(f"{name} {lag:,.0f}" for name, lag in self.max_lag.items()) or "none sampled"
        return [
            f"bench e2e: signed Stripe card loads, {self.rate:,}/s for {self.seconds}s "
            f"(webhooks x{self.workers} -> outbox relay -> ledger agent -> ledger sink, each a process)",
            f"  sent                      {self.sent:>10,}   ({self.achieved_per_s:,.0f}/s achieved, "
            f"{self.refused} not 2xx)",
            *([f"  first refusal: {self.first_refusal}"] if self.first_refusal else []),
            f"  webhook answered          p50 {self._pct(0.5, self.answered_ms):,.0f} ms, "
            f"p99 {self._pct(0.99, self.answered_ms):,.0f} ms",
            f"  posted to the ledger      {self.posted:>10,}",
            f"  received to journal row   p50 {self._pct(0.5):,.0f} ms, p99 {self._pct(0.99):,.0f} ms, "
            f"max {max(self.latencies_ms, default=0):,.0f} ms"
            + (f", mean {statistics.fmean(self.latencies_ms):,.0f} ms" if self.latencies_ms else ""),
            f"  most messages behind      {lags}",
            *self._cpu_lines(),
        ]

    def _cpu_lines(self) -> list[str]:
        """What each process (with its children) spent per delivery, from sending the first to
        seeing the last journal row: the pipeline's cost, and so the cores a rate needs."""
        if not self.cpu_seconds or not self.posted or self.window_seconds <= 0:
            return []
        total = sum(self.cpu_seconds.values())
        parts = ", ".join(
            f"{name} {seconds * 1000 / self.posted:.2f}" for name, seconds in self.cpu_seconds.items()
        )
        return [
            f"  CPU ms per delivery       {parts}",
            f"  CPU in all                {total * 1000 / self.posted:.2f} ms per delivery, "
            f"{total / self.window_seconds:.2f} cores busy over {self.window_seconds:.0f} s "
            f"({os.cpu_count()} on this machine)",
        ]


class _Processes:
    """The pipeline's stages as child processes, stopped with SIGTERM (then killed) on exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *args],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                errors = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
                raise BenchError(f"{' '.join(map(str, list(proc.args)[3:5]))} exited: {errors[-1500:]}")  # type: ignore[arg-type]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stderr:
                proc.stderr.close()


def _up(url: str, procs: _Processes) -> bool:
    """The probe answers 200, or a stage exited (stop waiting: `check` says which)."""
    return _ok(url) or any(p.poll() is not None for p in procs.procs)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def _drive(
    url: str,
    deliveries: list[tuple[str, dict[str, str], bytes]],
    rate: int,
    sent_at: dict[str, float],
    answered: list[float],
) -> tuple[int, str, float]:
    """Send each delivery at its scheduled time (open loop) over keep-alive connections; returns
    the refusals, the first refusal's answer, and the achieved rate.

    The client is a few lines of asyncio streams rather than an HTTP library: httpx spent about
    3 ms of CPU per request, a third of a core at 200/s on a machine the pipeline shares. A
    delivery's clock starts at its scheduled time, so waiting for a free connection counts."""
    host, port = url.removeprefix("http://").split(":")
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    refused, first_refusal = 0, ""

    async def connection() -> None:
        nonlocal refused, first_refusal
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (item := await queue.get()) is not None:
                charge, request = item
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                answered.append((time.monotonic() - sent_at[charge]) * 1000)
                if status >= 300:
                    refused += 1
                    first_refusal = first_refusal or f"{status} {body[:200].decode(errors='replace')}"
        finally:
            writer.close()

    requests = []
    for charge, headers, body in deliveries:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        requests.append(
            (
                charge,
                (
                    f"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: {host}\r\n{head}"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body,
            )
        )
    workers = [asyncio.create_task(connection()) for _ in range(64)]
    started = time.monotonic()
    for n, (charge, request) in enumerate(requests):
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0.001:
            await asyncio.sleep(delay)
        sent_at[charge] = due
        queue.put_nowait((charge, request))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return refused, first_refusal, len(deliveries) / (time.monotonic() - started)


def _lag(port: int, group: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    pattern = re.compile(
        rf'^kafka_consumergroup_lag\{{consumergroup="{re.escape(group)}",[^}}]*\}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


def bench_e2e(settings: Settings, catalog: Catalog, rate: int, seconds: int, workers: int = 1) -> E2eResult:
    if seconds > MAX_SECONDS:
        raise BenchError(f"--seconds must be at most {MAX_SECONDS}: signed deliveries expire after 300 s")
    result = E2eResult(rate, seconds, workers)
    run = uuid.uuid4().hex[:8]
    groups = {"ledger agent": f"bench-e2e-{run}-agent", "ledger sink": f"bench-e2e-{run}-sink"}
    copies = {
        topic: _scratch_topic(settings, f"e2e-{topic.split('.')[0]}", catalog.money_partitions)
        for topic in (CARDS, POSTED, BALANCES)
    }
    try:
        return _measure(settings, rate, seconds, workers, result, groups, copies)
    finally:
        for copy in copies.values():
            _drop_topic(settings, copy)


def _measure(
    settings: Settings,
    rate: int,
    seconds: int,
    workers: int,
    result: E2eResult,
    groups: dict[str, str],
    copies: dict[str, str],
) -> E2eResult:
    keys = send.ProviderKeys()
    deliveries = []
    for n in range(rate * seconds):
        body = send.encode(send.stripe_charge(f"cus_bench_{n % CUSTOMERS}", 1_000 + n % 9_000))
        charge = re.search(rb'"id": ?"(ch_[^"]+)"', body)
        if charge is None:
            raise BenchError("a Stripe charge without its id")
        headers = {"Content-Type": "application/json", **keys.stripe(body)}
        deliveries.append((charge.group(1).decode(), headers, body))
    with scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as db_url:
        with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO provider_links VALUES ('stripe', %s, %s, %s)",
                [(f"cus_bench_{n}", TENANT, f"acc-{n}") for n in range(CUSTOMERS)],
            )
            # the poller's way in (this scratch database only): each look reads just the new rows
            cur.execute("CREATE INDEX ON journal_entries (recorded_at)")
        port, agent_port, sink_port = free_port(), free_port(), free_port()
        env = service_environment(settings, keys, db_url)
        procs = _Processes(env)
        try:
            procs.start(
                "connect", "webhooks", "--port", str(port), "--admin-port", "0", "--workers", str(workers)
            )
            procs.start(
                "connect",
                "outbox-relay",
                "--operator",
                "--redirect",
                f"{CARDS}={copies[CARDS]}",
                "--redirect",
                f"{BALANCES}={copies[BALANCES]}",
            )
            procs.start(
                "agent",
                "ledger",
                "--operator",
                "--group",
                groups["ledger agent"],
                "--topic",
                copies[CARDS],
                "--alias",
                f"{copies[CARDS]}={CARDS}",
                "--output-to",
                f"{POSTED}={copies[POSTED]}",
                "--metrics-port",
                str(agent_port),
            )
            procs.start(
                "sink",
                "ledger",
                "--operator",
                "--group",
                groups["ledger sink"],
                "--topic",
                copies[POSTED],
                "--alias",
                f"{copies[POSTED]}={POSTED}",
                "--metrics-port",
                str(sink_port),
            )
            url = f"http://127.0.0.1:{port}"
            for probe in (
                url + "/healthz",
                f"http://127.0.0.1:{agent_port}/readyz",
                f"http://127.0.0.1:{sink_port}/readyz",
            ):
                if not wait_until(partial(_up, probe, procs), 90, 0.2):
                    raise BenchError(f"{probe} did not answer")
                procs.check()
            sent_at: dict[str, float] = {}
            seen_at: dict[str, float] = {}
            done = threading.Event()
            lags = {name: 0.0 for name in groups}

            def poll_ledger() -> None:
                """Each journal row as soon as it is committed: one sink's transactions follow one
                another, so a row not seen yet has a later `recorded_at` than every row seen."""
                with psycopg.connect(db_url, autocommit=True) as conn:
                    last = datetime(1970, 1, 1, tzinfo=UTC)
                    while not done.is_set():
                        rows = conn.execute(
                            "SELECT reference_id, recorded_at FROM journal_entries WHERE recorded_at > %s",
                            (last,),
                        ).fetchall()
                        now = time.monotonic()
                        for reference, recorded in rows:
                            seen_at.setdefault(reference.rsplit("/", 1)[-1], now)
                            last = max(last, recorded)
                        time.sleep(0.01)

            def sample_lag() -> None:
                while not done.wait(1.0):
                    for name, lag_port in (("ledger agent", agent_port), ("ledger sink", sink_port)):
                        lags[name] = max(lags[name], _lag(lag_port, groups[name]))

            pollers = [
                threading.Thread(target=poll_ledger, daemon=True),
                threading.Thread(target=sample_lag, daemon=True),
            ]
            for t in pollers:
                t.start()
            roots = dict(zip(STAGES, (p.pid for p in procs.procs), strict=True))
            roots |= {s.name: pid for s in Stack(settings).services if (pid := s.process.pid()) is not None}
            before, client_before, started = tree_cpu_seconds(roots), time.process_time(), time.monotonic()
            result.refused, result.first_refusal, result.achieved_per_s = asyncio.run(
                _drive(url, deliveries, rate, sent_at, result.answered_ms)
            )
            result.sent = len(deliveries)
            wait_until(lambda: len(seen_at) >= result.sent - result.refused, 120, 0.2)
            after = tree_cpu_seconds(roots)
            result.window_seconds = time.monotonic() - started
            result.cpu_seconds = {name: after[name] - before[name] for name in roots if name in after}
            result.cpu_seconds["bench client"] = time.process_time() - client_before
            done.set()
            for t in pollers:
                t.join(10)
            procs.check()
        finally:
            procs.stop()
    result.posted = len(seen_at)
    result.latencies_ms = [(seen_at[c] - sent_at[c]) * 1000 for c in seen_at if c in sent_at]
    result.max_lag = lags
    return result
