"""`ledgerstream run`: every worker of the catalog as a supervised child process.

The plan comes from the catalog: one process per agent and sink (`--workers N` per
consumer group, at most the partitions of its inputs), the outbox relay, the command API,
the provider webhooks when a provider is configured, and the connectors that reach outside
when the environment configures them (`ops.outside`: a chain listener and a chain sender per
chain, the payout dispatcher). supervisord runs them:

- a worker that exits is restarted; one that keeps failing within `START_SECONDS` is
  retried with a growing delay (supervisord's backoff: 1 s, 2 s, 3 s, ...);
- SIGTERM or SIGINT stops every worker with SIGTERM, waits `STOP_SECONDS` for each to
  finish its batch, and only then kills it;
- each agent, sink, the relay and each outside connector serves `/healthz`, `/readyz` and
  `/metrics` on its own port, counted up from `--metrics-base` (9400) in plan order; the API and the webhooks
  serve `/metrics` on their admin ports.

Everything of one run lives in one folder (`.stack/run/` by default): the generated
`supervisord.conf`, supervisord's control socket (owner only) and log, and one log per
worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.outside import CHAINS, Outside
from topics.catalog import Catalog
from topics.consuming import own_group
from topics.errors import LedgerstreamError
from topics.ports import OFFSET, api_ports, webhook_ports
from topics.ports import metrics_base as first_metrics_port
from topics.settings import Settings

START_SECONDS = 5
"""A worker that exits sooner than this after starting counts as a failed start (backoff)."""
START_RETRIES = 1000
"""Failed starts in a row before supervisord gives a worker up (FATAL)."""
STOP_SECONDS = 30
"""How long a worker gets to finish its batch after SIGTERM before it is killed."""
GIVE_UP_AFTER = 3
"""`run` reports a worker that exited this often before it was ready (supervisord keeps retrying)."""

CONNECTORS = ("outbox_relay", "chain_listener", "chain_sender", "payout_dispatcher", "api", "webhooks")
GROUPS = ("agents", "sinks", "connectors")
NOTHING_OUTSIDE = Outside()


@dataclass(frozen=True)
class Worker:
    """One supervised process.

    name: supervisord's program name (the component, numbered when it runs several workers).
    component: the catalog consumer (fees_agent, ledger_sink, ...) or the connector.
    kind: agent, sink or connector.
    args: the `ledgerstream` arguments that run it.
    metrics_port: where it serves `/metrics` (None: nowhere).
    probe: the URL that answers 200 once it is ready to work.
    env: environment variables of this worker only (a chaos run's fault points).
    """

    name: str
    component: str
    kind: str
    args: tuple[str, ...]
    metrics_port: int | None
    probe: str
    env: tuple[tuple[str, str], ...] = ()


def _selected(component: str, kind: str, only: Sequence[str] | None, name: str | None = None) -> bool:
    if not only:
        return True
    short = component.rsplit("_", 1)[0] if kind in ("agent", "sink") else component
    names = {component, short, component.replace("_", "-"), f"{kind}s"}
    if name is not None:
        names |= {name, name.replace("_", "-")}
    return any(o in names for o in only)


def known_names(catalog: Catalog) -> set[str]:
    """Every word `--only` accepts."""
    per_chain = [f"{c}_{chain}" for c in ("chain_listener", "chain_sender") for chain in CHAINS]
    names = set(GROUPS) | {n for c in (*CONNECTORS, *per_chain) for n in (c, c.replace("_", "-"))}
    for c in catalog.consumers.values():
        names |= {c.name, c.name.rsplit("_", 1)[0]}
    return names


def own_groups(settings: Settings, catalog: Catalog, workers: list[Worker], suffix: str) -> list[Worker]:
    """The workers with each agent and sink in a group of its own (`ledgerstream.<name>.<suffix>`),
    started at the end of its topics: the demo's run works what the demo sends, not what the topics
    already hold (other runs', or the tests' events for accounts this database does not have). The
    catalog's groups keep their positions for the next `ledgerstream run`."""
    result = []
    for worker in workers:
        if worker.kind in ("agent", "sink"):
            group = own_group(settings, worker.component, suffix, catalog.inputs_of(worker.component))
            worker = dataclasses.replace(worker, args=(*worker.args, "--group", group))
        result.append(worker)
    return result


def plan(
    catalog: Catalog,
    *,
    only: Sequence[str] | None = None,
    workers: int = 1,
    metrics_base: int | None = None,
    webhooks: bool = True,
    outside: Outside = NOTHING_OUTSIDE,
    partitions: Callable[[str], int] | None = None,
    offset: int = OFFSET,
) -> list[Worker]:
    """The workers of a run, in start order: agents, sinks, then the connectors.

    `only` keeps the components it names: `agents`, `sinks`, `connectors`, a catalog
    consumer (`fees_agent`), a short name that matches the agent and the sink
    (`fees`), or a connector (`outbox_relay`, `api`, `webhooks`). `workers` processes run
    in each consumer group, at most as many as its inputs' partitions (`partitions(topic)`,
    the catalog's count by default): a worker more would sit idle.
    `webhooks` False leaves the webhook service out (no provider is configured); `outside` names
    the outside connectors to run (none by default: each needs its configuration). Ports are
    this machine's (`topics.ports`, moved by `offset`); metrics count up from `metrics_base`.
    """
    unknown = sorted(set(only or ()) - known_names(catalog))
    if unknown:
        raise LedgerstreamError(
            f"--only: unknown {', '.join(unknown)} (agents, sinks, connectors, or a name)"
        )
    count = partitions or (lambda topic: catalog.topic(topic).partitions)
    result: list[Worker] = []
    port = metrics_base if metrics_base is not None else first_metrics_port(offset)
    for kind in ("agent", "sink"):
        for consumer in catalog.consumers.values():
            if consumer.kind != kind or not _selected(consumer.name, kind, only):
                continue
            most = max(count(t) for t in catalog.inputs_of(consumer.name))
            if workers > most:
                raise LedgerstreamError(
                    f"--workers {workers}: {consumer.name}'s inputs have {most} partitions; "
                    f"a worker beyond {most} would sit idle"
                )
            short = consumer.name.rsplit("_", 1)[0]
            for i in range(workers):
                name = consumer.name if workers == 1 else f"{consumer.name}-{i}"
                args: tuple[str, ...] = (kind, short, "--metrics-port", str(port))
                result.append(Worker(name, consumer.name, kind, args, port, _readyz(port)))
                port += 1
    if _selected("outbox_relay", "connector", only):
        args = ("connect", "outbox-relay", "--metrics-port", str(port))
        result.append(Worker("outbox_relay", "outbox_relay", "connector", args, port, _readyz(port)))
        port += 1
    polling: list[tuple[str, str, tuple[str, ...]]] = [
        (f"chain_listener_{c}", "chain_listener", ("connect", "chain", "--chain", c)) for c in outside.chains
    ]
    if outside.chain_sender:
        polling += [
            (f"chain_sender_{c}", "chain_sender", ("connect", "chain-sender", "--chain", c))
            for c in outside.chains
        ]
    if outside.payouts:
        polling.append(("payout_dispatcher", "payout_dispatcher", ("connect", "dispatcher")))
    for name, component, command in polling:
        if _selected(component, "connector", only, name):
            args = (*command, "--metrics-port", str(port))
            result.append(Worker(name, component, "connector", args, port, _readyz(port)))
            port += 1
    if _selected("api", "connector", only):
        api, admin = api_ports(offset)
        args = ("connect", "api", "--port", str(api), "--admin-port", str(admin))
        result.append(Worker("api", "api", "connector", args, admin, f"http://127.0.0.1:{admin}/healthz"))
    if webhooks and _selected("webhooks", "connector", only):
        hooks, admin = webhook_ports(offset)
        args = ("connect", "webhooks", "--port", str(hooks), "--admin-port", str(admin))
        probe = f"http://127.0.0.1:{hooks}/healthz"
        result.append(Worker("webhooks", "webhooks", "connector", args, admin, probe))
    if not result:
        raise LedgerstreamError("--only selects no worker")
    return result


def _readyz(port: int) -> str:
    return f"http://127.0.0.1:{port}/readyz"


def ready(url: str, timeout: float = 1.0) -> bool:
    """Whether the worker behind `url` answers 200 now."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _quote(arg: str) -> str:
    # supervisord splits `command` with shlex; its config parser expands %(...)s
    return "'" + arg.replace("%", "%%").replace("'", "'\"'\"'") + "'"


def _env_value(value: str) -> str:
    if any(c in value for c in '"\\\n,'):
        raise LedgerstreamError(
            f"a worker's environment value {value!r} holds a quote, backslash, comma or newline"
        )
    return value.replace("%", "%%")


def config(workers: Iterable[Worker], folder: Path, *, python: str = sys.executable) -> str:
    """supervisord's configuration for `workers`, everything kept under `folder`."""
    logs = folder / "logs"
    lines = [
        "; generated by `ledgerstream run`; edits are overwritten",
        "[supervisord]",
        f"logfile={folder / 'supervisord.log'}",
        f"pidfile={folder / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "loglevel=info",
        "",
        "[unix_http_server]",
        f"file={folder / 'supervisor.sock'}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{folder / 'supervisor.sock'}",
    ]
    for w in workers:
        command = " ".join(_quote(a) for a in (python, "-m", "ops.cli", *w.args))
        lines += [
            "",
            f"[program:{w.name}]",
            f"command={command}",
            "autostart=true",
            "autorestart=true",
            f"startsecs={START_SECONDS}",
            f"startretries={START_RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_SECONDS}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (w.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            "environment="
            + ",".join(f'{k}="{_env_value(v)}"' for k, v in (("PYTHONUNBUFFERED", "1"), *w.env)),
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ProcessState:
    name: str
    state: str
    pid: int
    uptime: float
    exitstatus: int
    restarts: int
    description: str
    logfile: str


class Supervisor:
    """One run's supervisord: start it, ask it, stop it.

    Args:
        folder: the run's folder (configuration, socket, logs).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "supervisord.conf"
        self.socket = folder / "supervisor.sock"
        self.pidfile = folder / "supervisord.pid"
        self.log = folder / "supervisord.log"
        self.plan_file = folder / "workers.json"

    def call(self, method: str, *args: Any) -> Any:
        """One call of supervisord's XML-RPC interface (`supervisor.<method>`) over its socket."""
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        with xmlrpc.client.ServerProxy("http://127.0.0.1", transport) as proxy:
            return getattr(proxy.supervisor, method)(*args)

    def select(self, only: Sequence[str]) -> list[Worker]:
        """The workers of the going run that `only` names (as `plan` reads it)."""
        chosen = [w for w in self.workers() if _selected(w.component, w.kind, only, w.name)]
        if not chosen:
            raise LedgerstreamError(f"--only {','.join(only)}: no worker of the run in {self.folder} matches")
        return chosen

    def stop_workers(self, workers: Sequence[Worker]) -> None:
        """Stop these workers (each after its batch) and keep them stopped; the others run on."""
        for w in workers:
            try:
                self.call("stopProcess", w.name, True)
            except xmlrpc.client.Fault as e:
                if "NOT_RUNNING" not in e.faultString:
                    raise LedgerstreamError(f"{w.name}: {e.faultString}") from None

    def start_workers(self, workers: Sequence[Worker]) -> None:
        """Start these workers of the going run again."""
        for w in workers:
            try:
                self.call("startProcess", w.name, False)
            except xmlrpc.client.Fault as e:
                if "ALREADY_STARTED" not in e.faultString:
                    raise LedgerstreamError(f"{w.name}: {e.faultString}") from None

    def pid(self) -> int | None:
        """supervisord's pid while it runs, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def write(self, workers: Sequence[Worker]) -> None:
        if self.pid() is not None:
            raise LedgerstreamError(
                f"a run is already going in {self.folder} (supervisord pid {self.pid()}); "
                "`ledgerstream run stop` ends it"
            )
        (self.folder / "logs").mkdir(parents=True, exist_ok=True)
        if self.log.exists():  # restarts are counted from this run's log; the last run's is kept
            self.log.replace(self.log.with_suffix(".log.1"))
        self.folder.chmod(0o700)
        self.conf.write_text(config(workers, self.folder))
        self.plan_file.write_text(json.dumps([dataclasses.asdict(w) for w in workers], indent=1))

    def workers(self) -> list[Worker]:
        """The plan of the run in this folder."""
        try:
            items = json.loads(self.plan_file.read_text())
        except (OSError, ValueError):
            return []
        return [
            Worker(**{**i, "args": tuple(i["args"]), "env": tuple(tuple(e) for e in i.get("env", ()))})
            for i in items
        ]

    def command(self, *, foreground: bool) -> list[str]:
        exe = Path(sys.executable).parent / "supervisord"
        argv = [str(exe) if exe.exists() else "supervisord", "-c", str(self.conf)]
        return [*argv, "--nodaemon"] if foreground else argv

    def start_detached(self, workers: Sequence[Worker], timeout: float) -> None:
        """Start supervisord in the background and return once every worker runs and is ready;
        a worker that does not get there stops the whole run, and is named."""
        done = subprocess.run(self.command(foreground=False), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LedgerstreamError(f"supervisord did not start: {(done.stderr or done.stdout).strip()}")
        try:
            self.wait_answering(15)
            self.wait_running(timeout)
            self.wait_ready(workers, timeout)
        except BaseException:
            self.stop()
            raise

    def wait_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.call("getState")
                return
            except (OSError, xmlrpc.client.Fault):
                time.sleep(0.1)
        raise LedgerstreamError(f"supervisord did not answer within {timeout:.0f}s (see {self.log})")

    def states(self) -> list[ProcessState]:
        try:
            infos = self.call("getAllProcessInfo")
        except OSError:
            raise LedgerstreamError(
                f"no run is going in {self.folder} (start one with `ledgerstream run`)"
            ) from None
        restarts = self.restarts()
        return [
            ProcessState(
                name=i["name"],
                state=i["statename"],
                pid=i["pid"],
                uptime=float(i["now"] - i["start"]) if i["pid"] else 0.0,
                exitstatus=i["exitstatus"],
                restarts=restarts.get(i["name"], 0),
                description=i["description"],
                logfile=i["stdout_logfile"],
            )
            for i in infos
        ]

    def restarts(self) -> dict[str, int]:
        """How often each worker exited unexpectedly, from supervisord's log."""
        counts: dict[str, int] = {}
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return counts
        for name in re.findall(r"exited: (\S+) \(.*not expected\)", text):
            counts[name] = counts.get(name, 0) + 1
        return counts

    def last_line(self, name: str) -> str:
        """The last line a worker logged (its error, when it keeps exiting)."""
        try:
            lines = (self.folder / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return next((line for line in reversed(lines) if line.strip()), "")

    def _refuse(self, what: str, names: Sequence[str]) -> LedgerstreamError:
        detail = "; ".join(f"{n}: {self.last_line(n) or 'nothing logged'}" for n in names)
        return LedgerstreamError(f"{what}: {detail} (logs in {self.folder / 'logs'})")

    def wait_running(self, timeout: float) -> None:
        """Wait until every worker is RUNNING (past its start period); raises naming the laggards."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [s for s in self.states() if s.state != "RUNNING"]
            if not waiting:
                return
            failing = [s.name for s in waiting if s.state == "FATAL" or s.restarts >= GIVE_UP_AFTER]
            if failing:
                raise self._refuse("failing", failing)
            if time.monotonic() >= deadline:
                raise self._refuse(f"not running after {timeout:.0f}s", [s.name for s in waiting])
            time.sleep(0.5)

    def wait_ready(self, workers: Sequence[Worker], timeout: float) -> None:
        """Wait until every worker's probe answers 200: partitions assigned, dependencies up.
        A worker that exited `GIVE_UP_AFTER` times meanwhile is named with its last log line."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [w.name for w in workers if not ready(w.probe)]
            if not waiting:
                return
            restarts = self.restarts()
            failing = [n for n in waiting if restarts.get(n, 0) >= GIVE_UP_AFTER]
            if failing:
                raise self._refuse("failing", failing)
            if time.monotonic() >= deadline:
                raise self._refuse(f"not ready after {timeout:.0f}s", waiting)
            time.sleep(0.5)

    def stop(self, timeout: float = STOP_SECONDS + 15) -> bool:
        """Stop every worker and supervisord; True once it is gone, False if no run was going."""
        pid = self.pid()
        if pid is None:
            return False
        deadline = time.monotonic() + timeout
        try:
            # every worker is asked at once (each still ends after its batch): supervisord's own
            # shutdown stops one program after the other, about half a second each
            self.call("stopAllProcesses", False)
            while any(i["statename"] in ("RUNNING", "STOPPING") for i in self.call("getAllProcessInfo")):
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            self.call("shutdown")
        except OSError:
            os.kill(pid, signal.SIGTERM)
        while self.pid() is not None:
            if time.monotonic() >= deadline:
                raise LedgerstreamError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")
            time.sleep(0.1)
        return True


def run_foreground(supervisor: Supervisor, on_running: Callable[[], None], timeout: float) -> int:
    """Run supervisord in the foreground until SIGINT or SIGTERM, which stop every worker.

    supervisord runs in a session of its own, so a terminal's Ctrl-C reaches only this
    process, which asks supervisord to stop: no worker sees the signal twice and is
    restarted while the others stop. Returns supervisord's exit status.
    """
    child = subprocess.Popen(supervisor.command(foreground=True), start_new_session=True)

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            supervisor.wait_answering(15)
            supervisor.wait_running(timeout)
            on_running()
        except LedgerstreamError:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            child.wait()
            raise
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
