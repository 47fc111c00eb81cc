"""Load on the webhook endpoint: wrk (Debian) against a `connect webhooks` process on loopback.

The service runs as its own process on a scratch database, with its own provider
keys. Signed Stripe deliveries, each with a new event id, are prepared before the
run (their timestamps stay inside Stripe's 300 s tolerance, which bounds the run)
and cycled through by a wrk Lua script, one share per wrk thread. A second phase
sends redeliveries of events already kept, the path Redis answers. A third sends card
authorization requests, each decided against its account's available balance while
Stripe waits (2 s at most): over 64 cards and accounts, each decision locks its account,
places a hold and announces it. Figures: requests/s, latency percentiles, non-2xx
answers, and the inbox and outbox rows written, which must equal the unique deliveries
answered; for the decisions, the holds placed, which must equal the approvals.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from connectors.accounts import open_account
from ops.dev import webhook_senders as send
from ops.dev.serving import free_port
from ops.stack.process import wait_until
from ops.stack.services import apt_install
from sinks.migrate import scratch_database
from topics.catalog import load_catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.names import CARDS_TRANSACTION_RECEIVED_V1
from topics.schemas import load_store
from topics.settings import REPO_ROOT, Settings

MAX_SECONDS = 240
CARDS = 64
"""Accounts the card authorization phase spreads its decisions over (each decision locks one)."""


def service_environment(settings: Settings, keys: send.ProviderKeys, db_url: str) -> dict[str, str]:
    """The environment of a benchmarked `connect webhooks` (and the processes beside it): the
    bench's provider keys, its scratch database, and no rate limit (the load comes from one
    client on loopback, which the per-client limit would otherwise hold to 200/s)."""
    unlimited = {
        "WEBHOOK_RATE_PER_SECOND": "1000000",
        "WEBHOOK_BURST": "1000000",
        "WEBHOOK_CLIENT_RATE_PER_SECOND": "1000000",
        "WEBHOOK_CLIENT_BURST": "1000000",
    }
    return {
        **os.environ,
        **keys.environment(),
        **unlimited,
        "DATABASE_URL": db_url,
        "REDIS_URL": settings.redis_url,
        "SCHEMA_REGISTRY_URL": "",
    }


class BenchLimit(LedgerstreamError, ValueError):
    """An argument outside what the benchmark can measure."""


LUA = r"""
local requests, n, index, step = {}, 0, 0, 1
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end
function init(args)
  local id = tonumber(wrk.thread:get("id")) or 1
  step = tonumber(args[2]) or 1
  local limit = tonumber(args[3]) or math.huge
  for line in io.lines(args[1]) do
    if n >= limit then break end
    local signature, body = line:match("^([^\t]*)\t(.*)$")
    n = n + 1
    requests[n] = wrk.format("POST", "/v1/webhooks/stripe",
      {["Content-Type"] = "application/json", ["Stripe-Signature"] = signature}, body)
  end
  index = id - step
end
function request()
  index = index + step
  if index > n then index = ((index - 1) % n) + 1 end
  return requests[index]
end
"""


@dataclass
class Phase:
    name: str
    requests: int = 0
    per_second: float = 0.0
    non_2xx: int = 0
    errors: str = ""
    latency: dict[str, str] = field(default_factory=dict)


@dataclass
class WebhookBench:
    seconds: int
    connections: int
    workers: int
    phases: list[Phase] = field(default_factory=list)
    inbox_rows: int = 0
    outbox_rows: int = 0
    decisions: int = 0
    approved: int = 0
    holds: int = 0

    def lines(self) -> list[str]:
        out = [
            f"webhook bench: wrk, {self.connections} connections, {self.seconds}s per phase, "
            f"`connect webhooks --workers {self.workers}` on loopback (2 cores, shared with wrk)"
        ]
        for p in self.phases:
            lat = ", ".join(f"p{k} {v}" for k, v in p.latency.items())
            out.append(
                f"  {p.name}: {p.requests} requests, {p.per_second:,.0f} req/s, {lat}; "
                f"non-2xx {p.non_2xx}{'; ' + p.errors if p.errors else ''}"
            )
        out.append(
            f"  kept: {self.inbox_rows} inbox rows and {self.outbox_rows} outbox rows, one each per "
            f"unique delivery (wrk counts only answers received before it stopped)"
        )
        if self.decisions:
            out.append(
                f"  card authorizations: {self.decisions} decided, {self.approved} approved, "
                f"{self.holds} holds placed (one per approval)"
            )
        return out


def _write_signed(path: Path, keys: send.ProviderKeys, documents: Iterable[dict[str, Any]]) -> None:
    """One signed Stripe delivery per line, `signature<TAB>body`, as the wrk script reads them."""
    with path.open("w") as f:
        for document in documents:
            body = send.encode(document)
            f.write(f"{keys.stripe(body)['Stripe-Signature']}\t{body.decode()}\n")


def _wrk(
    url: str, data: Path, script: Path, seconds: int, connections: int, threads: int, limit: int | None = None
) -> Phase:
    done = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            str(data),
            str(threads),
            str(limit or ""),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout
    phase = Phase("")
    if m := re.search(r"(\d+) requests in", text):
        phase.requests = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        phase.per_second = float(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        phase.non_2xx = int(m.group(1))
    if m := re.search(r"Socket errors: (.*)", text):
        phase.errors = "socket errors: " + m.group(1)
    for pct in ("50", "90", "99"):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.MULTILINE):
            phase.latency[pct] = m.group(1)
    return phase


def bench_webhooks(
    settings: Settings, seconds: int = 10, connections: int = 32, threads: int = 2, workers: int = 1
) -> WebhookBench:
    if seconds > MAX_SECONDS:
        raise BenchLimit(f"--seconds must be at most {MAX_SECONDS}: signed deliveries expire after 300 s")
    if shutil.which("wrk") is None:
        apt_install("wrk")
    result = WebhookBench(seconds, connections, workers)
    keys = send.ProviderKeys()
    with scratch_database(settings.database_url.get_secret_value(), prefix="ledgerstream_bench") as db_url:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO provider_links VALUES ('stripe', 'cus_bench', 'tenant-bench', 'acc-bench')"
            )
            codec, catalog = AvroCodec(load_store(settings.avro_dir)), load_catalog()
            for i in range(CARDS):
                open_account(
                    conn,
                    codec,
                    catalog,
                    tenant="tenant-bench",
                    environment=settings.environment,
                    account_id=f"acc-card-{i}",
                    currency="EUR",
                    holder=f"card holder {i}",
                    overdraft_limit=10**12,
                )
                conn.execute(
                    "INSERT INTO provider_links VALUES ('stripe', %s, 'tenant-bench', %s)",
                    (f"ic_bench_{i}", f"acc-card-{i}"),
                )
        port = free_port()
        env = service_environment(settings, keys, db_url)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "connect",
                "webhooks",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--admin-port",
                "0",
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            def answers() -> bool:
                if server.poll() is not None:
                    return True  # exited: stop waiting
                try:
                    return httpx.get(url + "/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            if not wait_until(answers, 60, 0.2) or server.poll() is not None:
                raise RuntimeError("the webhook service did not start")
            with tempfile.TemporaryDirectory() as tmp:
                script, data = Path(tmp) / "stripe.lua", Path(tmp) / "deliveries.tsv"
                script.write_text(LUA)
                count = min(seconds * 4000, 400_000)
                _write_signed(data, keys, (send.stripe_charge("cus_bench", 1_000) for _ in range(count)))
                unique = _wrk(url, data, script, seconds, connections, threads)
                unique.name = "unique deliveries"
                if unique.requests > count:
                    unique.name += f" ({unique.requests - count} repeats after the {count} prepared)"
                with psycopg.connect(db_url) as conn:
                    kept = conn.execute("SELECT count(*) FROM webhook_inbox").fetchone()[0]  # type: ignore[index]
                replay = _wrk(url, data, script, seconds, connections, threads, limit=min(kept, count))
                replay.name = f"redeliveries of the first {min(kept, count)} (already kept)"
                asks = Path(tmp) / "authorizations.tsv"
                requests = (
                    send.stripe_authorization_request(f"ic_bench_{n % CARDS}", 1_000) for n in range(count)
                )
                _write_signed(asks, keys, requests)
                decided = _wrk(url, asks, script, seconds, connections, threads)
                decided.name = f"card authorization decisions over {CARDS} accounts"
            result.phases = [unique, replay, decided]
            with psycopg.connect(db_url) as conn:
                result.decisions, result.approved, result.holds = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE (result->>'approved')::boolean), "
                    "(SELECT count(*) FROM holds) FROM webhook_inbox "
                    "WHERE event_type = 'issuing_authorization.request'"
                ).fetchone()  # type: ignore[misc]
            with psycopg.connect(db_url) as conn:
                result.inbox_rows, result.outbox_rows = conn.execute(  # the charges, not the decisions
                    "SELECT (SELECT count(*) FROM webhook_inbox WHERE event_type = 'charge.succeeded'), "
                    "(SELECT count(*) FROM outbox WHERE topic = %s)",
                    (CARDS_TRANSACTION_RECEIVED_V1,),
                ).fetchone()  # type: ignore[misc]
        finally:
            server.terminate()
            server.wait(30)
    return result
