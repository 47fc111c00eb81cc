"""`ledgerstream bench e2e --rate 2000 --seconds 60`: signed webhooks and API commands to their ledger rows.

Two paths are measured together, each stage its own process, on a scratch database:
- a signed webhook: `connect webhooks` verifies a Stripe `charge.succeeded` (a card load) and
  keeps it, with its event in the outbox, in one transaction; `connect outbox-relay`
  publishes it to `cards.transaction.received.v1`;
- an API command: `connect api` authenticates an FX market order (an API key of the bench's
  tenant) and keeps it, with its event in the outbox; the relay publishes it to
  `fx.order.requested.v1`; `agent fx` reserves the sold amount and executes it at the rate
  cached in an empty scratch Redis database, to `fx.conversion.executed.v1`;
- then both: `agent ledger` posts them to `ledger.journal.posted.v1` and `sink ledger` writes
  the journal entries.

Requests are sent open-loop at `--rate` per second in all (`--commands` of them API orders,
the rest webhooks; each on its schedule, whatever the answers take), so a slow stage shows as
latency, not as a lower rate. A poller sees each journal row as soon as it is committed; a
request's latency is from its scheduled send to that moment (the bench indexes `recorded_at`
in its scratch database for that poller). The agents' and the sink's consumer lag is sampled
every second from their `/metrics`. Every event goes to scratch copies of the card, order,
conversion, journal and balance topics (the relay redirects, the agents and the sink read a
copy as the topic it stands for), deleted afterwards: the real topics see nothing of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import httpx
import psycopg

from connectors.auth import create_tenant, issue_key
from ops.dev import webhook_senders as send
from ops.dev.bench import BenchError, _drop_topic, _scratch_topic, small_euros
from ops.dev.bench_agent import cache_rate, scratch_redis
from ops.dev.bench_reservations import fund
from ops.dev.bench_webhooks import service_environment
from ops.dev.serving import free_port
from ops.process_stats import tree_cpu_seconds
from ops.stack import Stack
from ops.stack.process import wait_until
from sinks.migrate import scratch_database
from streams.fx.agent import conversion_id
from topics.catalog import Catalog
from topics.names import (
    ACCOUNTS_BALANCE_UPDATED_V1,
    CARDS_TRANSACTION_RECEIVED_V1,
    FX_CONVERSION_EXECUTED_V1,
    FX_ORDER_REQUESTED_V1,
    LEDGER_JOURNAL_POSTED_V1,
)
from topics.settings import REPO_ROOT, Settings

TENANT = "tenant-bench"
CARDS = CARDS_TRANSACTION_RECEIVED_V1
POSTED = LEDGER_JOURNAL_POSTED_V1
BALANCES = ACCOUNTS_BALANCE_UPDATED_V1
ORDERS = FX_ORDER_REQUESTED_V1
CONVERSIONS = FX_CONVERSION_EXECUTED_V1
CUSTOMERS = 200
FUNDS = 10_000_000_000
"""Each customer's EUR funds in cents: every order of a run fits."""
MAX_SECONDS = 240


@dataclass
class E2eResult:
    rate: int
    seconds: int
    workers: int
    commands: float
    """The share of the rate sent as API orders."""
    sent: int = 0
    orders_sent: int = 0
    refused: int = 0
    posted: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    card_latencies_ms: list[float] = field(default_factory=list)
    order_latencies_ms: list[float] = field(default_factory=list)
    achieved_per_s: float = 0.0
    first_refusal: str = ""
    answered_ms: list[float] = field(default_factory=list)
    api_answered_ms: list[float] = field(default_factory=list)
    max_lag: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    window_seconds: float = 0.0

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def _spread(self, values: list[float]) -> str:
        return (
            f"p50 {self._pct(values, 0.5):,.0f} ms, p99 {self._pct(values, 0.99):,.0f} ms, "
            f"max {max(values, default=0):,.0f} ms"
        )

    def lines(self) -> list[str]:
        lags = ", ".join(f"{name} {lag:,.0f}" for name, lag in self.max_lag.items()) or "none sampled"
        webhooks = self.sent - self.orders_sent
        return [
            f"bench e2e: {self.rate:,} requests/s for {self.seconds}s: {webhooks:,} signed Stripe card loads "
            f"(webhooks x{self.workers}) and {self.orders_sent:,} API FX orders (command API, fx agent); "
            "outbox relay -> ledger agent -> ledger sink; each stage a process",
            f"  sent                      {self.sent:>10,}   ({self.achieved_per_s:,.0f}/s achieved, "
            f"{self.refused} not 2xx)",
            *([f"  first refusal: {self.first_refusal}"] if self.first_refusal else []),
            f"  webhook answered          p50 {self._pct(self.answered_ms, 0.5):,.0f} ms, "
            f"p99 {self._pct(self.answered_ms, 0.99):,.0f} ms",
            *(
                [
                    f"  API order answered        p50 {self._pct(self.api_answered_ms, 0.5):,.0f} ms, "
                    f"p99 {self._pct(self.api_answered_ms, 0.99):,.0f} ms"
                ]
                if self.orders_sent
                else []
            ),
            f"  posted to the ledger      {self.posted:>10,}",
            f"  received to journal row   {self._spread(self.latencies_ms)}"
            + (f", mean {statistics.fmean(self.latencies_ms):,.0f} ms" if self.latencies_ms else ""),
            *(
                [
                    f"    card loads (webhook)    {self._spread(self.card_latencies_ms)}",
                    f"    FX orders (API)         {self._spread(self.order_latencies_ms)}",
                ]
                if self.orders_sent
                else []
            ),
            f"  most messages behind      {lags}",
            *self._cpu_lines(),
        ]

    def _cpu_lines(self) -> list[str]:
        """What each process (with its children) spent per request, from sending the first to
        seeing the last journal row: the pipeline's cost, and so the cores a rate needs."""
        if not self.cpu_seconds or not self.posted or self.window_seconds <= 0:
            return []
        total = sum(self.cpu_seconds.values())
        parts = ", ".join(
            f"{name} {seconds * 1000 / self.posted:.2f}" for name, seconds in self.cpu_seconds.items()
        )
        return [
            f"  CPU ms per request        {parts}",
            f"  CPU in all                {total * 1000 / self.posted:.2f} ms per request, "
            f"{total / self.window_seconds:.2f} cores busy over {self.window_seconds:.0f} s "
            f"({os.cpu_count()} on this machine)",
        ]


class _Processes:
    """The pipeline's stages as child processes, stopped with SIGTERM (then killed) on exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *args],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        self.names.append(name)
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


@dataclass
class _Stream:
    """One kind of request, sent open loop at its own rate over its own keep-alive connections."""

    url: str
    requests: list[tuple[str | None, bytes]]
    """Each request with the key its journal row is found by, or None: the key is in its answer."""
    per_second: float
    answered: list[float]
    connections: int
    key_in_answer: Callable[[bytes], str] | None = None


def _request(url: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    host = url.removeprefix("http://")
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


async def _send(stream: _Stream, sent_at: dict[str, float], started: float) -> tuple[int, str]:
    """Send each request of `stream` at its scheduled time; the refusals and the first one's answer.

    The client is a few lines of asyncio streams rather than an HTTP library: httpx spent about
    3 ms of CPU per request, a third of a core at 200/s on a machine the pipeline shares. A
    request's clock starts at its scheduled time, so waiting for a free connection counts."""
    host, port = stream.url.removeprefix("http://").split(":")
    queue: asyncio.Queue[tuple[str | None, bytes, float] | None] = asyncio.Queue()
    refused, first_refusal = 0, ""

    async def connection() -> None:
        nonlocal refused, first_refusal
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while (item := await queue.get()) is not None:
                key, request, due = item
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                stream.answered.append((time.monotonic() - due) * 1000)
                if status >= 300:
                    refused += 1
                    first_refusal = first_refusal or f"{status} {body[:200].decode(errors='replace')}"
                    continue
                if key is None and stream.key_in_answer is not None:
                    key = stream.key_in_answer(body)
                if key is not None:
                    sent_at[key] = due
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(stream.connections)]
    for n, (key, request) in enumerate(stream.requests):
        due = started + n / stream.per_second
        delay = due - time.monotonic()
        if delay > 0.001:
            await asyncio.sleep(delay)
        queue.put_nowait((key, request, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return refused, first_refusal


async def _drive(streams: list[_Stream], sent_at: dict[str, float]) -> tuple[int, str, float]:
    """Every stream at once; the refusals, the first refusal's answer, and the achieved rate."""
    started = time.monotonic()
    outcomes = await asyncio.gather(*(_send(s, sent_at, started) for s in streams if s.requests))
    total = sum(len(s.requests) for s in streams)
    refused = sum(n for n, _ in outcomes)
    first = next((answer for _, answer in outcomes if answer), "")
    return refused, first, total / (time.monotonic() - started)


def _conversion_key(answer: bytes) -> str:
    """The journal reference an accepted order's execution is posted under."""
    return f"fx:{conversion_id(json.loads(answer)['order_id'])}"


def _lag(port: int, group: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    pattern = re.compile(
        rf'^kafka_consumergroup_lag\{{consumergroup="{re.escape(group)}",[^}}]*\}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


def bench_e2e(
    settings: Settings, catalog: Catalog, rate: int, seconds: int, workers: int = 1, commands: float = 0.25
) -> E2eResult:
    if seconds > MAX_SECONDS:
        raise BenchError(f"--seconds must be at most {MAX_SECONDS}: signed deliveries expire after 300 s")
    if not 0 <= commands <= 1:
        raise BenchError(f"--commands is a share of the rate, from 0 to 1; got {commands}")
    result = E2eResult(rate, seconds, workers, commands)
    run = uuid.uuid4().hex[:8]
    groups = {
        "fx agent": f"bench-e2e-{run}-fx",
        "ledger agent": f"bench-e2e-{run}-agent",
        "ledger sink": f"bench-e2e-{run}-sink",
    }
    copies = {
        topic: _scratch_topic(settings, f"e2e-{topic.split('.')[0]}", catalog.money_partitions)
        for topic in (CARDS, ORDERS, CONVERSIONS, POSTED, BALANCES)
    }
    try:
        return _measure(settings, result, groups, copies)
    finally:
        for copy in copies.values():
            _drop_topic(settings, copy)


def _deliveries(keys: send.ProviderKeys, url: str, count: int) -> list[tuple[str | None, bytes]]:
    """Signed Stripe card loads, each with its charge id (its journal row's reference)."""
    deliveries: list[tuple[str | None, bytes]] = []
    for n in range(count):
        body = send.encode(send.stripe_charge(f"cus_bench_{n % CUSTOMERS}", 1_000 + n % 9_000))
        charge = re.search(rb'"id": ?"(ch_[^"]+)"', body)
        if charge is None:
            raise BenchError("a Stripe charge without its id")
        headers = {"Content-Type": "application/json", **keys.stripe(body)}
        deliveries.append((charge.group(1).decode(), _request(url, "/v1/webhooks/stripe", headers, body)))
    return deliveries


def _orders(settings: Settings, token: str, url: str, count: int) -> list[tuple[str | None, bytes]]:
    """FX market orders selling 1.00 to 39.99 EUR for USD (their references are in the answers)."""
    orders: list[tuple[str | None, bytes]] = []
    for n in range(count):
        body = json.dumps(
            {
                "account_id": f"acc-{n % CUSTOMERS}",
                "sell": small_euros(n),
                "buy_currency": "USD",
                "order_type": "MARKET",
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-Environment": settings.environment,
            "Idempotency-Key": str(uuid.uuid4()),
        }
        orders.append((None, _request(url, "/v1/fx/orders", headers, body)))
    return orders


def _prepare(settings: Settings, db_url: str, redis_url: str) -> str:
    """The scratch database's customers (linked to Stripe, funded in EUR), the bench tenant's API
    key (its token returned), and a EUR/USD rate quoted now in the scratch Redis database."""
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO provider_links VALUES ('stripe', %s, %s, %s)",
            [(f"cus_bench_{n}", TENANT, f"acc-{n}") for n in range(CUSTOMERS)],
        )
        # the poller's way in (this scratch database only): each look reads just the new rows
        cur.execute("CREATE INDEX ON journal_entries (recorded_at)")
        create_tenant(conn, TENANT, "bench")
        _, token = issue_key(conn, TENANT, "bench", ["fx:write"])
    fund(db_url, CUSTOMERS, settings.environment, FUNDS)
    cache_rate(settings, redis_url)
    return token


def _measure(
    settings: Settings, result: E2eResult, groups: dict[str, str], copies: dict[str, str]
) -> E2eResult:
    keys = send.ProviderKeys()
    total = result.rate * result.seconds
    orders = round(total * result.commands)
    with (
        scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as db_url,
        scratch_redis(settings.redis_url) as redis_url,
    ):
        token = _prepare(settings, db_url, redis_url)
        port, api_port, api_admin = free_port(), free_port(), free_port()
        metrics = {name: free_port() for name in groups}
        env = {**service_environment(settings, keys, db_url), "REDIS_URL": redis_url}
        procs = _Processes(env)
        try:
            procs.start(
                "webhooks",
                "connect",
                "webhooks",
                "--port",
                str(port),
                "--admin-port",
                "0",
                "--workers",
                str(result.workers),
            )
            procs.start(
                "command api", "connect", "api", "--port", str(api_port), "--admin-port", str(api_admin)
            )
            procs.start(
                "outbox relay",
                "connect",
                "outbox-relay",
                "--operator",
                *(f"--redirect={topic}={copies[topic]}" for topic in (CARDS, ORDERS, BALANCES)),
            )
            procs.start(
                "fx agent",
                "agent",
                "fx",
                "--operator",
                "--group",
                groups["fx agent"],
                f"--topic={copies[ORDERS]}",
                f"--alias={copies[ORDERS]}={ORDERS}",
                f"--output-to={CONVERSIONS}={copies[CONVERSIONS]}",
                "--metrics-port",
                str(metrics["fx agent"]),
            )
            procs.start(
                "ledger agent",
                "agent",
                "ledger",
                "--operator",
                "--group",
                groups["ledger agent"],
                *(f"--topic={copies[topic]}" for topic in (CARDS, CONVERSIONS)),
                *(f"--alias={copies[topic]}={topic}" for topic in (CARDS, CONVERSIONS)),
                f"--output-to={POSTED}={copies[POSTED]}",
                "--metrics-port",
                str(metrics["ledger agent"]),
            )
            procs.start(
                "ledger sink",
                "sink",
                "ledger",
                "--operator",
                "--group",
                groups["ledger sink"],
                f"--topic={copies[POSTED]}",
                f"--alias={copies[POSTED]}={POSTED}",
                "--metrics-port",
                str(metrics["ledger sink"]),
            )
            url, api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}"
            for probe in (
                url + "/healthz",
                f"http://127.0.0.1:{api_admin}/healthz",
                *(f"http://127.0.0.1:{p}/readyz" for p in metrics.values()),
            ):
                if not wait_until(partial(_up, probe, procs), 90, 0.2):
                    raise BenchError(f"{probe} did not answer")
                procs.check()
            streams = [
                _Stream(
                    url,
                    _deliveries(keys, url, total - orders),
                    (total - orders) / result.seconds,
                    result.answered_ms,
                    64,
                ),
                _Stream(
                    api,
                    _orders(settings, token, api, orders),
                    orders / result.seconds,
                    result.api_answered_ms,
                    16,
                    _conversion_key,
                ),
            ]
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
                    for name, lag_port in metrics.items():
                        lags[name] = max(lags[name], _lag(lag_port, groups[name]))

            pollers = [
                threading.Thread(target=poll_ledger, daemon=True),
                threading.Thread(target=sample_lag, daemon=True),
            ]
            for t in pollers:
                t.start()
            roots = dict(zip(procs.names, (p.pid for p in procs.procs), strict=True))
            roots |= {s.name: pid for s in Stack(settings).services if (pid := s.process.pid()) is not None}
            before, client_before, started = tree_cpu_seconds(roots), time.process_time(), time.monotonic()
            result.refused, result.first_refusal, result.achieved_per_s = asyncio.run(
                _drive(streams, sent_at)
            )
            result.sent, result.orders_sent = total, orders
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
    for key, at in seen_at.items():
        if key in sent_at:
            latency = (at - sent_at[key]) * 1000
            result.latencies_ms.append(latency)
            (result.order_latencies_ms if key.startswith("fx:") else result.card_latencies_ms).append(latency)
    result.max_lag = lags
    return result
