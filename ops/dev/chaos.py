"""`ledgerstream chaos`: the pipeline under a seeded fault schedule, then its money invariants.

A run, for one scenario and one seed:
1. every agent and sink, the outbox relay, the command API and the provider webhooks start
   as separate processes under supervisord, as `ledgerstream run` starts them (a run folder of
   their own, `.stack/chaos/`); the payout dispatcher and a TrueLayer sandbox, which pays out
   and reports back with signed webhooks, run in this process;
2. once what was left on the topics is worked off, the dead-letter topics are counted;
3. a tenant of the run opens its accounts, and signed bank-credit webhooks fund them;
4. for `--minutes`, transfers are POSTed to the command API at a steady pace (some too large
   to afford, some the provider fails) and more deposits arrive (bank credits, and ERC-20
   transfers to the run's wallet that the listener confirms), while the scenario's faults
   strike on a schedule drawn from the seed; an input counts once the ingress acknowledged it
   (a 2xx), and a refused or unanswered one is sent again, as a client or a provider would;
5. when the faults are over and the last input was acknowledged, the run waits until the
   pipeline drained (every effect there, no lag, no pending outbox row) and checks the
   invariants (`ops.dev.chaos_checks`).

The same seed draws the same schedule, amounts and targets: a failing seed replays.
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import KafkaException, Producer

from connectors.accounts import open_account
from connectors.auth import create_tenant, issue_key
from connectors.chain import ChainListener, ChainSpec
from connectors.payouts import PayoutDispatcher, TrueLayerPayouts
from ops.dev import webhook_senders as send
from ops.dev.chaos_checks import Inputs, Verdict, judge, ledger_violations, outstanding, unposted_deposits
from ops.dev.chaos_schedule import SCENARIOS, Action, Draw, Scenario
from ops.dev.evm_sandbox import start_sandbox
from ops.dev.provider_sandbox import create_sandbox
from ops.dev.serving import serving
from ops.pipeline_status import consumer_lags
from ops.schema_gate import register
from ops.stack.process import wait_until
from ops.stack.services import Kafka, Postgres, Redis, Service, port_open
from ops.supervise import Supervisor, Worker, plan
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.errors import LedgerstreamError
from topics.events import new_metadata
from topics.faults import FAULT_ENV, UNTIL_ENV
from topics.names import FX_RATE_UPDATED_V1, LEDGER_JOURNAL_POSTED_V1
from topics.ports import API_PORTS, METRICS_BASE, WEBHOOK_PORTS
from topics.producer import EventProducer
from topics.schemas import SchemaStore
from topics.settings import CHAIN_LISTENER, PAYOUT_DISPATCHER, REPO_ROOT, Settings

ACCOUNTS = 8
DEPOSIT = 1_000_000
"""Each account's first deposit, in minor units (10,000.00 EUR)."""
TOO_MUCH = 50_000_000
"""A transfer no account of the run can afford: refused INSUFFICIENT_FUNDS."""
PROVIDER_FAILS = 13
"""A payout whose minor units end in 13 is failed by the provider sandbox."""
DRAIN_SECONDS = 300.0
"""How long a run waits for the pipeline to drain after its faults, before it gives up."""


UNLIMITED = {
    "WEBHOOK_RATE_PER_SECOND": "1000000",
    "WEBHOOK_BURST": "1000000",
    "WEBHOOK_CLIENT_RATE_PER_SECOND": "1000000",
    "WEBHOOK_CLIENT_BURST": "1000000",
}
"""The webhooks' rate limits lifted: the load comes from one client on loopback."""


class ChaosError(LedgerstreamError):
    """A chaos run that could not be carried out (not an invariant that broke)."""


def _hostile(codec: AvroCodec, settings: Settings) -> list[Callable[[], bytes | None]]:
    """Each builds one bad value for the rates topic (read by the FX agent and the audit sink)."""

    def rate(**changes: Any) -> dict[str, Any]:
        record = {
            "metadata": new_metadata(
                "fx.rate.updated", tenant_id="tenant-chaos", environment=settings.environment, source="chaos"
            ),
            "pair": "EUR/USD",
            "base": "EUR",
            "quote": "USD",
            "bid": Decimal("1.0841"),
            "ask": Decimal("1.0843"),
            "rate_source": "chaos-feed",
            "quoted_at": datetime.now(UTC),
        }
        record.update(changes)
        return record

    def valid() -> bytes:
        return codec.encode(FX_RATE_UPDATED_V1, rate())

    def other_environment() -> bytes:
        record = rate()
        other = "live" if settings.environment == "sandbox" else "sandbox"
        record["metadata"] = {**record["metadata"], "environment": other}
        return codec.encode(FX_RATE_UPDATED_V1, record)

    return [
        lambda: b"\x07not avro at all",  # an unknown framing
        lambda: valid()[:-7],  # truncated
        lambda: valid()[:5] + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # a varint that never ends
        lambda: None,  # a tombstone
        other_environment,  # valid Avro of another environment
    ]


@dataclass
class ChaosResult:
    scenario: str
    seed: int
    verdict: Verdict
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_lag: int = 0
    """The most messages all consumer groups were behind, sampled every 2 s during the window."""

    @property
    def ok(self) -> bool:
        return not self.verdict.broken

    def line(self) -> str:
        v = self.verdict
        trial = ",".join(f"{c} {s}" for c, s in sorted(v.trial_balance.items())) or "0"
        return (
            f"{self.scenario:<16} seed {self.seed:<5} {'ok  ' if self.ok else 'FAIL'} "
            f"faults {len(self.actions):>3} inputs {v.inputs:>5} "
            f"effects {v.effects:>6} lost {len(v.lost)} duplicated {len(v.duplicated)} trial balance {trial} "
            f"peak lag {self.peak_lag:>5} recovery {v.recovery_seconds:5.1f}s "
            f"dead letters {v.dead_letters}/{v.expected_dead_letters} "
            f"({self.seconds:.0f}s)"
        )


class Chaos:
    """One scenario's run on the local stack; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        catalog: Catalog,
        scenario: Scenario,
        seed: int,
        *,
        transfers: int,
        minutes: float,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.settings, self.codec, self.catalog = settings, codec, catalog
        self.scenario, self.seed, self.say = scenario, seed, say
        self.rng = random.Random(f"{scenario.name}:{seed}")
        self.window = max(10.0, minutes * 60)
        self.transfer_count = transfers
        self.run_id = f"{seed}-{uuid.uuid4().hex[:6]}"
        self.tenant = f"tenant-chaos-{self.run_id}"
        self.inputs = Inputs(self.tenant)
        self.keys = send.ProviderKeys()
        self.supervisor = Supervisor(settings.stack_dir / "chaos")
        self.services: dict[str, Service] = {
            s.name: s
            for s in (
                Kafka(settings.stack_dir, settings.cache_dir),
                Postgres(settings.stack_dir, settings.cache_dir),
                Redis(settings.stack_dir, settings.cache_dir),
            )
        }
        self.accounts = [f"acc-chaos-{self.run_id}-{i}" for i in range(ACCOUNTS)]
        self.merchants = [f"ma-chaos-{self.run_id}-{i}" for i in range(ACCOUNTS)]
        self.wallet_account = f"acc-chaos-{self.run_id}-wallet"
        self.sandbox = start_sandbox(symbol="TUSD", decimals=6)
        self.wallet = self.sandbox.accounts[1]
        # each run's in-process chain is a new chain: its blocks restart at 0 and its tx hashes repeat
        self.spec = ChainSpec(f"chaos-{self.run_id}", confirmations=3, native_asset="ETH")
        self.chain_requests: queue.Queue[int] = queue.Queue()
        self.kills = 0
        self.peak_lag = 0
        self.done: list[str] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.token = ""

    # the workers ----------------------------------------------------------------------

    def workers(self, draw: Draw) -> list[Worker]:
        only = ["agents", "sinks", "connectors"]
        single = [w for w in plan(self.catalog, only=only) if w.component not in draw.doubled]
        doubled = (
            plan(self.catalog, only=draw.doubled, workers=2, metrics_base=METRICS_BASE + 50)
            if draw.doubled
            else []
        )
        result = []
        for w in [*single, *doubled]:
            env = dict(draw.env.get(w.name, {}))
            if FAULT_ENV in env:
                env[UNTIL_ENV] = str(self.fault_until)
            result.append(
                Worker(
                    w.name, w.component, w.kind, w.args, w.metrics_port, w.probe, tuple(sorted(env.items()))
                )
            )
        return result

    def pid(self, name: str, timeout: float = 60.0) -> int:
        """The worker's pid, once it runs (one killed a moment ago is being restarted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for state in self.supervisor.states():
                if state.name == name and state.state == "RUNNING" and state.pid:
                    return state.pid
            time.sleep(0.2)
        raise ChaosError(f"{name} is not running after {timeout:.0f}s")

    # faults -------------------------------------------------------------------------------

    def act(self, action: Action) -> None:
        kind, target = action.kind, action.target
        if kind == "kill":
            os.kill(self.pid(target), signal.SIGKILL)
            self.kills += 1
        elif kind == "sigstop":
            os.kill(self.pid(target), signal.SIGSTOP)
        elif kind == "sigcont":
            os.kill(self.pid(target), signal.SIGCONT)
        elif kind == "stop":
            self.supervisor.call("stopProcess", target, True)
        elif kind == "start":
            self.supervisor.call("startProcess", target, False)
        elif kind == "service-kill":
            pid = self.services[target].process.pid()
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
                wait_until(lambda: self.services[target].process.pid() is None, 15)
        elif kind == "redis-wipe":
            for f in (self.services["redis"].dir / "data").rglob("*"):
                if f.is_file():
                    f.unlink()
        elif kind == "service-start":
            service = self.services[target]
            wait_until(lambda: not port_open(service.port), 30)
            service.launch()
            if not wait_until(service.healthy, service.ready_timeout, 0.25):
                raise ChaosError(f"{target} did not come back: {service.process.tail()}")
        elif kind == "service-sigstop":
            pid = self.services[target].process.pid()
            if pid is not None:
                os.killpg(pid, signal.SIGSTOP)
        elif kind == "service-sigcont":
            pid = self.services[target].process.pid()
            if pid is not None:
                os.killpg(pid, signal.SIGCONT)
        elif kind == "disarm":
            pass  # the fault points disarm themselves at the window's end (LEDGERSTREAM_FAULT_UNTIL)
        elif kind == "replay":
            self.replay(int(target) % self.catalog.topic(LEDGER_JOURNAL_POSTED_V1).partitions)
        elif kind == "poison":
            self.poison(int(target))
        elif kind == "storm":
            self.storm()
        else:
            raise ChaosError(f"unknown fault action {kind}")

    def faults(self, actions: Sequence[Action], started: float, stop: threading.Event) -> None:
        for action in sorted(actions, key=lambda a: a.at):
            if stop.wait(max(0.0, started + action.at - time.monotonic())):
                return
            self.act(action)
            with self.lock:
                self.done.append(f"{time.monotonic() - started:6.1f}s {action.kind} {action.target}".rstrip())
            self.say(f"  {self.done[-1]}")

    # the workload -----------------------------------------------------------------------

    def _until_answered(
        self, send_once: Callable[[], httpx.Response], what: str, deadline: float = 180.0
    ) -> httpx.Response | None:
        answer = send_until_answered(send_once, deadline)
        if answer is None:
            with self.lock:
                self.inputs.not_acknowledged += 1
            self.say(f"  {what}: never acknowledged within {deadline:.0f}s")
        return answer

    def webhook(self, document: dict[str, Any], *, forged: bool = False) -> httpx.Response | None:
        body = send.encode(document)
        path = "/v1/webhooks/truelayer"
        headers = {"content-type": "application/json"}
        if forged:
            headers.update(send.ProviderKeys().sign("truelayer", body, path))  # someone else's key
        else:
            headers.update(self.keys.sign("truelayer", body, path))
        return self._until_answered(
            lambda: self.http.post(f"{self.hooks}{path}", content=body, headers=headers), "a webhook"
        )

    def deposit(self, i: int, units: int) -> None:
        document = send.truelayer_payment(self.merchants[i], units, "EUR")
        answer = self.webhook(document)
        if answer is not None and answer.status_code < 300:
            with self.lock:
                self.inputs.credit(self.inputs.deposits, document["transaction_id"], self.accounts[i], units)

    def transfer(self, n: int, i: int, units: int) -> None:
        key = f"chaos-{self.run_id}-t{n}"
        body = {
            "account_id": self.accounts[i],
            "amount": {"units": units, "currency": "EUR", "exponent": 2},
            "rail": "SEPA",
            "beneficiary_reference": "GB33BUKB20201555555555",
            "reference": f"chaos {n}",
        }
        headers = {
            "Authorization": f"Bearer {self.token}",
            "x-environment": self.settings.environment,
            "Idempotency-Key": key,
            "x-correlation-id": key,
        }
        answer = self._until_answered(
            lambda: self.http.post(f"{self.api}/v1/transfers", json=body, headers=headers), key
        )
        if answer is None:
            return
        if answer.status_code not in (200, 201):
            raise ChaosError(f"POST /v1/transfers answered {answer.status_code}: {answer.text}")
        with self.lock:
            self.inputs.transfers[answer.json()["transfer_id"]] = (self.accounts[i], units)

    def traffic(self, started: float, stop: threading.Event, rng: random.Random) -> None:
        """Transfers at a steady pace over the window, a deposit now and then."""
        pace = self.window / max(1, self.transfer_count)
        for n in range(self.transfer_count):
            if stop.wait(max(0.0, started + n * pace - time.monotonic())):
                return
            i = rng.randrange(ACCOUNTS)
            roll = rng.random()
            if roll < 0.04:
                units = TOO_MUCH
            elif roll < 0.08:
                units = rng.randint(1, 40) * 100 + PROVIDER_FAILS
            else:
                units = rng.randint(100, 5_000)
                units += units % 100 == PROVIDER_FAILS
            self.transfer(n, i, units)
            if n % 10 == 5:
                self.deposit(rng.randrange(ACCOUNTS), rng.randint(1_000, 20_000))
            if n % 10 == 2:
                self.chain_requests.put(rng.randint(1_000_000, 50_000_000))

    def chain(self, stop: threading.Event) -> None:
        """The chain's side: ERC-20 deposits to the run's wallet, a block mined every half second,
        and the chain listener catching up (a database outage is waited out, as its process does)."""
        url = self.settings.database_url.get_secret_value()
        conn: psycopg.Connection[Any] | None = None
        while not stop.wait(0.5):
            while not self.chain_requests.empty():
                units = self.chain_requests.get()
                tx = self.sandbox.send_token(self.sandbox.accounts[0], self.wallet, units)
                with self.lock:
                    chain_id = f"{self.spec.name}:{tx}:0"
                    self.inputs.credit(self.inputs.chain_deposits, chain_id, self.wallet_account, units)
            self.sandbox.tester.mine_blocks(1)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
                self.listener.catch_up(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def setup(self) -> None:
        url = self.settings.database_url.get_secret_value()
        with psycopg.connect(url, autocommit=True) as conn:
            create_tenant(conn, self.tenant, f"chaos run {self.run_id}")
            _, self.token = issue_key(conn, self.tenant, "chaos", ["transfers:write"])
            for merchant, account in zip(self.merchants, self.accounts, strict=True):
                conn.execute(
                    "INSERT INTO provider_links VALUES ('truelayer', %s, %s, %s)",
                    (merchant, self.tenant, account),
                )
            conn.execute(
                "INSERT INTO provider_links VALUES ('truelayer', %s, %s, %s)",
                (f"ma-chaos-{self.run_id}", self.tenant, self.accounts[0]),
            )
            spec, token = self.spec, self.sandbox.token.address.lower()
            conn.execute(
                "INSERT INTO chain_wallets VALUES (%s, %s, %s, %s)",
                (spec.name, self.wallet.lower(), self.tenant, self.wallet_account),
            )
            conn.execute("INSERT INTO crypto_assets VALUES (%s, 'TUSD', 6, %s)", (spec.name, token))
            conn.execute("INSERT INTO chain_tokens VALUES (%s, %s, 'TUSD', 6)", (spec.name, token))
            for account, currency in [*((a, "EUR") for a in self.accounts), (self.wallet_account, "TUSD")]:
                open_account(
                    conn,
                    self.codec,
                    self.catalog,
                    tenant=self.tenant,
                    environment=self.settings.environment,
                    account_id=account,
                    currency=currency,
                    holder=f"chaos customer {account}",
                )
        self.listener = ChainListener(
            self.settings.as_principal(CHAIN_LISTENER),
            self.codec,
            self.catalog,
            self.sandbox.w3,
            self.spec,
            start_block=self.sandbox.w3.eth.block_number + 1,
        )

    # scenario actions that feed the pipeline -----------------------------------------------

    def poison(self, kind: int) -> None:
        makers = _hostile(self.codec, self.settings)
        if kind < len(makers):
            raw = Producer(self.settings.as_principal("upstream").kafka_config(**{"acks": "all"}))
            raw.produce(FX_RATE_UPDATED_V1, value=makers[kind](), key=b"EUR/USD")
            if raw.flush(60):
                raise ChaosError("a poison message was not acknowledged within 60s")
        else:  # an inverted quote: valid Avro the FX agent refuses
            record = {
                "metadata": new_metadata(
                    "fx.rate.updated",
                    tenant_id=self.tenant,
                    environment=self.settings.environment,
                    source="chaos",
                ),
                "pair": "EUR/USD",
                "base": "EUR",
                "quote": "USD",
                "bid": Decimal("1.0900"),
                "ask": Decimal("1.0800"),
                "rate_source": "chaos-feed",
                "quoted_at": datetime.now(UTC),
            }
            self.producer.produce(FX_RATE_UPDATED_V1, record)
        self.producer.flush(60)
        with self.lock:
            self.expected_dead_letters += 1 if kind >= len(makers) else 2

    def storm(self) -> None:
        i = self.rng.randrange(ACCOUNTS)
        units = self.rng.randint(1_000, 20_000)
        document = send.truelayer_payment(self.merchants[i], units, "EUR")
        forged = [send.truelayer_payment(self.merchants[i], 10_000_000, "EUR") for _ in range(3)]
        with ThreadPoolExecutor(max_workers=13) as pool:
            genuine = list(pool.map(lambda _: self.webhook(document), range(10)))
            refused = list(pool.map(lambda d: self.webhook(d, forged=True), forged))
        if any(a is not None and a.status_code < 300 for a in genuine):
            with self.lock:
                self.inputs.credit(self.inputs.deposits, document["transaction_id"], self.accounts[i], units)
        for d, a in zip(forged, refused, strict=True):
            with self.lock:
                self.inputs.forged.append(d["event_id"])
            if a is not None and a.status_code < 300:
                raise ChaosError(f"a forged webhook was answered {a.status_code}")

    def replay(self, partition: int) -> None:
        """An operator's replay of one partition of the journal topic, from the window's start, into
        the ledger sink while the sink's own workers run: nothing may be posted twice."""
        since = int((time.time() - (time.monotonic() - self.window_started)) * 1000)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ops.cli",
                "replay",
                "--topic",
                LEDGER_JOURNAL_POSTED_V1,
                "-p",
                str(partition),
                "--from-time",
                str(since),
                "--into-sink",
                "ledger",
                "--reason",
                f"chaos run {self.run_id}: replay under traffic",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            raise ChaosError(f"replay failed: {(done.stderr or done.stdout).strip()[-600:]}")

    # the run --------------------------------------------------------------------------------

    def sample_lag(self, stop: threading.Event) -> None:
        while not stop.wait(2.0):
            try:
                lag = sum(g.total_lag for g in consumer_lags(self.settings, self.catalog))
            except (KafkaException, LedgerstreamError):
                continue  # the broker is away: nothing to sample
            self.peak_lag = max(self.peak_lag, lag)

    def dead_letters(self) -> int:
        return sum(g.dead_letters for g in consumer_lags(self.settings, self.catalog))

    def drained(self) -> bool:
        url = self.settings.database_url.get_secret_value()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                if outstanding(conn, self.inputs):
                    return False
                pending = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
                if pending and pending[0]:
                    return False
            return all(g.total_lag == 0 for g in consumer_lags(self.settings, self.catalog))
        except (psycopg.OperationalError, psycopg.InterfaceError, KafkaException, LedgerstreamError):
            return False  # a stack still healing

    def run(self) -> ChaosResult:
        began = time.monotonic()
        names = [w.name for w in plan(self.catalog, only=["agents", "sinks", "connectors"])]
        draw = self.scenario.draw(self.rng, self.window, names)
        self.expected_dead_letters = 0
        self.fault_until = time.time() + self.window + 120
        workers = self.workers(draw)
        for port in (API_PORTS[0], WEBHOOK_PORTS[0]):
            if port_open(port):
                raise ChaosError(f"port {port} is taken: stop `ledgerstream run` first")
        if self.settings.schema_registry_url:  # the workers refuse to start on an unregistered schema
            register(self.settings, SchemaStore(self.settings.avro_dir))
        if self.supervisor.pid() is not None:
            self.supervisor.stop()
        for old in (self.supervisor.folder / "logs").glob("*.log*"):
            old.unlink()  # the crashes a run's fault points caused are counted from its logs
        self.supervisor.write(workers)
        self.say(f"chaos {self.scenario.name} seed {self.seed}: {len(workers)} workers, run {self.run_id}")
        # supervisord hands its environment to every worker: the webhooks get the sandbox's keys
        # (JSON, which supervisord's per-program environment cannot quote) and no rate limit, and
        # every worker the database this harness funds and checks
        saved = dict(os.environ)
        database = {"DATABASE_URL": self.settings.database_url.get_secret_value()}
        os.environ.update({**self.keys.environment(), **UNLIMITED, **database})
        try:
            self.supervisor.start_detached(workers, 180)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        stop = threading.Event()
        try:
            return self._run(draw, stop, began)
        finally:
            stop.set()
            for name in ("kafka", "postgres", "redis"):  # nothing left stopped or down
                service = self.services[name]
                pid = service.process.pid()
                if pid is not None:
                    os.killpg(pid, signal.SIGCONT)
                elif not port_open(service.port):
                    service.launch()
                    wait_until(service.healthy, service.ready_timeout, 0.25)
            self.supervisor.stop()

    def _run(self, draw: Draw, stop: threading.Event, began: float) -> ChaosResult:
        if not wait_until(self.drained, DRAIN_SECONDS, 1.0):
            raise ChaosError("the pipeline did not work off what was on its topics before the run")
        before = self.dead_letters()
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as conn:
            ledger_before = ledger_violations(conn, self.codec)
        if ledger_before:
            self.say(
                f"  ledger check finds {len(ledger_before)} violations before the run; only new ones count"
            )
        self.api = f"http://127.0.0.1:{API_PORTS[0]}"
        self.hooks = f"http://127.0.0.1:{WEBHOOK_PORTS[0]}"
        self.producer = EventProducer(self.settings.as_principal("upstream"), self.codec, self.catalog)
        self.setup()
        restarts_before = sum(self.supervisor.restarts().values())
        credentials = self.keys.payouts()
        sandbox = create_sandbox(
            f"{self.hooks}/v1/webhooks/truelayer", self.keys.truelayer, credentials, attempts=100_000
        )
        with (
            httpx.Client(timeout=10) as self.http,
            serving(sandbox) as provider,
            TrueLayerPayouts(provider, f"ma-chaos-{self.run_id}", credentials.truelayer) as payouts,
        ):
            dispatcher = PayoutDispatcher(
                self.settings.as_principal(PAYOUT_DISPATCHER), self.codec, self.catalog, payouts
            )
            threads = [
                threading.Thread(
                    target=self._guarded(lambda: dispatcher.run(stop=stop, poll=0.05)), daemon=True
                )
            ]
            threads.append(threading.Thread(target=self._guarded(lambda: self.chain(stop)), daemon=True))
            for t in threads:
                t.start()
            for i in range(ACCOUNTS):
                self.deposit(i, DEPOSIT)
            if not wait_until(self.first_deposits_posted, 120, 0.5):
                raise ChaosError("the first deposits were not posted within 120s")
            started = self.window_started = time.monotonic()
            traffic_rng = random.Random(f"traffic:{self.scenario.name}:{self.seed}")
            faults = threading.Thread(target=self._guarded(lambda: self.faults(draw.actions, started, stop)))
            traffic = threading.Thread(target=self._guarded(lambda: self.traffic(started, stop, traffic_rng)))
            sampling = threading.Event()
            sampler = threading.Thread(target=self.sample_lag, args=(sampling,), daemon=True)
            faults.start()
            traffic.start()
            sampler.start()
            faults.join()
            traffic.join()
            sampling.set()
            if self.errors:
                raise self.errors[0]
            healed = time.monotonic()
            self.say(
                f"  faults over, {self.inputs.count} inputs acknowledged; waiting for the pipeline to drain"
            )
            drained = wait_until(self.drained, DRAIN_SECONDS, 0.5)
            recovery = time.monotonic() - healed
            stop.set()
            for t in threads:
                t.join(30)
        exits = self._unbidden_exits(restarts_before)
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as conn:
            verdict = judge(
                conn,
                self.codec,
                self.inputs,
                dead_letters=self.dead_letters() - before,
                expected_dead_letters=self.expected_dead_letters,
                recovery_seconds=recovery,
                drained=drained,
                unexpected_exits=exits,
                ledger_before=ledger_before,
            )
        self.producer.flush(30)
        return ChaosResult(
            self.scenario.name,
            self.seed,
            verdict,
            self.done,
            time.monotonic() - began,
            self.peak_lag,
        )

    def keep_logs(self) -> Path:
        """Copy the run's worker and supervisord logs where the next run does not clear them."""
        kept = self.supervisor.folder / "failed" / f"{self.scenario.name}-seed{self.seed}-{self.run_id}"
        shutil.copytree(self.supervisor.folder / "logs", kept / "logs", dirs_exist_ok=True)
        if self.supervisor.log.exists():
            shutil.copy2(self.supervisor.log, kept / "supervisord.log")
        return kept

    def _unbidden_exits(self, before: int) -> list[str]:
        """Workers that exited though nothing here killed them (fault-point crashes are bidden)."""
        restarts = self.supervisor.restarts()
        crashed = 0
        for path in (self.supervisor.folder / "logs").glob("*.log"):
            crashed += path.read_text(errors="replace").count("exiting as a kill -9 would")
        unbidden = sum(restarts.values()) - before - self.kills - crashed
        if unbidden <= 0:
            return []
        return [f"{name} ({n}x)" for name, n in sorted(restarts.items()) if n][:10] or [f"{unbidden} workers"]

    def first_deposits_posted(self) -> bool:
        with psycopg.connect(self.settings.database_url.get_secret_value(), autocommit=True) as conn:
            return unposted_deposits(conn, self.inputs) == 0

    def _guarded(self, work: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as e:  # handed to the run, which stops and reports it
                self.errors.append(e)

        return run


RETRIED = {409, 429}
"""Answers a client sends its request again on, besides a 5xx and no answer: 409, the first
request with the key is still being worked (after a stall, the client's retry can meet it);
429, slow down."""


def send_until_answered(send_once: Callable[[], httpx.Response], deadline: float) -> httpx.Response | None:
    """Send until the ingress gives a final answer, as a client or a provider retries: anything
    but a 5xx or one of `RETRIED`; None if none came within `deadline` seconds."""
    give_up = time.monotonic() + deadline
    delay = 0.1
    while time.monotonic() < give_up:
        try:
            answer = send_once()
            if answer.status_code < 500 and answer.status_code not in RETRIED:
                return answer
        except httpx.HTTPError:
            pass
        time.sleep(delay)
        delay = min(2 * delay, 2.0)
    return None


def run_chaos(
    settings: Settings,
    codec: AvroCodec,
    catalog: Catalog,
    scenarios: Sequence[str],
    seeds: Sequence[int],
    *,
    transfers: int,
    minutes: float,
    say: Callable[[str], None],
) -> list[ChaosResult]:
    """Every scenario with every seed, one after the other; a line per run is `say`-ed."""
    results = []
    for name in scenarios:
        for seed in seeds:
            chaos = Chaos(
                settings, codec, catalog, SCENARIOS[name], seed, transfers=transfers, minutes=minutes, say=say
            )
            result = chaos.run()
            say(result.line())
            for problem in result.verdict.broken[:20]:
                say(f"    {problem}")
            if not result.ok:
                say(f"    the run's logs are kept in {chaos.keep_logs()}")
            results.append(result)
    return results
