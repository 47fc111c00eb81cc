"""`ledgerstream run [start | status | stop]`: the whole pipeline as supervised processes."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.console import Parser, err, out, port_arg, positive_int, seconds_arg, settings_or_error
from topics.ports import METRICS_BASE


def _outside(word: str) -> bool:
    """Whether an `--only` word names connectors that need configuration from outside."""
    return word == "connectors" or word.startswith(("webhooks", "chain", "payout"))


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one worker, e.g. --only agents or --only fees,ledger")
    return names


def _folder(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else settings_or_error().stack_dir / "run"


def _table(states: list[Any], workers: list[Any]) -> None:
    from rich.table import Table

    from ops.supervise import ready

    by_name = {w.name: w for w in workers}
    order = {w.name: i for i, w in enumerate(workers)}
    states = sorted(states, key=lambda s: (order.get(s.name, len(order)), s.name))
    table = Table(title="ledgerstream run", title_justify="left")
    for column in ("worker", "state", "ready", "pid", "uptime", "restarts", "metrics", "log"):
        table.add_column(column)
    for s in states:
        w = by_name.get(s.name)
        colour = (
            "green" if s.state == "RUNNING" else "yellow" if s.state in ("STARTING", "BACKOFF") else "red"
        )
        is_ready = w is not None and s.state == "RUNNING" and ready(w.probe, timeout=0.5)
        table.add_row(
            s.name,
            f"[{colour}]{s.state}[/{colour}]",
            "[green]yes[/green]" if is_ready else "[red]no[/red]",
            str(s.pid or "-"),
            f"{s.uptime:.0f}s" if s.pid else "-",
            str(s.restarts),
            f":{w.metrics_port}" if w is not None and w.metrics_port else "-",
            s.logfile,
        )
    out.print(table)


def run_start(args: argparse.Namespace) -> int:
    from connectors.webhooks.settings import WebhookSettings
    from ops.outside import Outside
    from ops.supervise import Supervisor, plan, run_foreground
    from topics.catalog import load_catalog

    folder = _folder(args)
    only = [n for chunk in args.only or [] for n in chunk]
    supervisor = Supervisor(folder)
    if only and supervisor.pid() is not None:  # a going run: start the named workers it stopped
        chosen = supervisor.select(only)
        supervisor.start_workers(chosen)
        supervisor.wait_running(args.timeout)
        supervisor.wait_ready(chosen, args.timeout)
        err.print(f"run: started {', '.join(w.name for w in chosen)} again", markup=False)
        return 0
    hooks = bool(WebhookSettings().providers())
    outside = Outside.from_environment(os.environ)
    left_out = outside.left_out()
    if not hooks:
        left_out.insert(
            0,
            "the webhook service (no provider: set STRIPE_WEBHOOK_SECRETS, SUMSUB_WEBHOOK_SECRET, "
            "PLAID_WEBHOOK_JWKS, TRUELAYER_WEBHOOK_JWKS or CIRCLE_WEBHOOK_KEYS)",
        )
    if left_out and (not only or any(_outside(word) for word in only)):
        err.print(f"run: left out, as nothing configures them: {'; '.join(left_out)}", markup=False)
    workers = plan(
        load_catalog(),
        only=only,
        workers=args.workers,
        metrics_base=args.metrics_base,
        webhooks=hooks,
        outside=outside,
    )
    supervisor.write(workers)
    err.print(
        f"run: starting {len(workers)} workers under supervisord (logs in {folder / 'logs'})", markup=False
    )
    if args.detach:
        supervisor.start_detached(workers, args.timeout)
        _table(supervisor.states(), workers)
        err.print("run: every worker is running; `ledgerstream run stop` stops them", markup=False)
        return 0

    def running() -> None:
        supervisor.wait_ready(workers, args.timeout)
        _table(supervisor.states(), workers)
        err.print("run: every worker is running; Ctrl-C or SIGTERM stops them", markup=False)

    status = run_foreground(supervisor, running, args.timeout)
    err.print("run: stopped", markup=False)
    return status


def run_status(args: argparse.Namespace) -> int:
    from ops.supervise import Supervisor

    supervisor = Supervisor(_folder(args))
    states = supervisor.states()
    _table(states, supervisor.workers())
    return 0 if all(s.state == "RUNNING" for s in states) else 1


def run_stop(args: argparse.Namespace) -> int:
    from ops.supervise import Supervisor

    folder = _folder(args)
    supervisor = Supervisor(folder)
    only = [n for chunk in args.only or [] for n in chunk]
    if only:  # some workers of the going run, e.g. a consumer group before its offsets are reset
        if supervisor.pid() is None:
            err.print(f"run: no run is going in {folder}", markup=False)
            return 1
        chosen = supervisor.select(only)
        supervisor.stop_workers(chosen)
        err.print(
            f"run: stopped {', '.join(w.name for w in chosen)}; `run start --only` starts them again",
            markup=False,
        )
        return 0
    if supervisor.stop():
        err.print("run: every worker stopped", markup=False)
    else:
        err.print(f"run: no run is going in {folder}", markup=False)
    return 0


def add_run_command(sub: Any, command: Callable[..., Any]) -> None:
    """Register `run` on the top-level subparsers."""
    actions = {"start": run_start, "status": run_status, "stop": run_stop}
    rn: Parser = sub.add_parser(
        "run",
        help="run every agent, sink and connector as supervised processes (start, status, stop)",
        description="Run the pipeline: every agent and sink of the catalog, the outbox relay, the command "
        "API, the webhooks when a provider is configured, a chain listener per chain whose node is "
        "configured (CHAIN_RPC_URL_<CHAIN>) and a chain sender beside it when CHAIN_SENDER_KEYS names the "
        "wallets' keys, and the payout dispatcher when PAYOUT_PROVIDER_URL is set; each a process "
        "supervisord restarts with backoff. `run` stays in the foreground until Ctrl-C or SIGTERM, which "
        "stop every worker after its batch; `run --detach` returns once all run; `run status` prints "
        "the table; `run stop` ends it.",
    )
    rn.add_argument("action", nargs="?", choices=list(actions), default="start", help="default start")
    rn.add_argument(
        "--only",
        type=_names,
        action="append",
        metavar="NAMES",
        help="comma-separated: agents, sinks, connectors, a consumer (fees_agent), a short name for both "
        "agent and sink (fees), or a connector (outbox_relay, api, webhooks, chain_listener, "
        "chain_listener_ethereum, chain_sender, payout_dispatcher); repeatable (default: all)",
    )
    rn.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes per consumer group, at most its partitions (default 1)",
    )
    rn.add_argument(
        "--metrics-base",
        type=port_arg,
        default=METRICS_BASE,
        help=f"first metrics port; agents, sinks, the relay and the outside connectors count up from it "
        f"(default {METRICS_BASE})",
    )
    rn.add_argument("--detach", action="store_true", help="return once every worker runs")
    rn.add_argument(
        "--timeout",
        type=seconds_arg,
        default=120.0,
        help="seconds to wait for every worker to run (default 120)",
    )
    rn.add_argument(
        "--dir", help="the run's folder: configuration, control socket, logs (default .stack/run)"
    )
    rn.set_defaults(fn=lambda args: actions[args.action](args))


def deploy_render(args: argparse.Namespace) -> int:
    from ops.deploy import render
    from topics.catalog import load_catalog

    written = render(load_catalog())
    for path in written:
        err.print(f"wrote {path}", markup=False)
    err.print(f"deploy render: {len(written)} files changed", markup=False)
    return 0


def deploy_check(args: argparse.Namespace) -> int:
    from ops.deploy import drifted
    from ops.manifest_check import KUBERNETES_VERSION, check_compose, check_manifests
    from topics.catalog import load_catalog
    from topics.settings import REPO_ROOT

    stale = drifted(load_catalog())
    for path in stale:
        err.print(
            f"deploy check: {path} is not what the catalog renders (run `ledgerstream deploy render`)",
            markup=False,
        )
    cache = settings_or_error().cache_dir
    count, problems = check_manifests(REPO_ROOT / "deploy" / "kubernetes", cache)
    problems += check_compose(
        [REPO_ROOT / "docker-compose.yml", REPO_ROOT / "ops" / "compose" / "workers.yml"], cache
    )
    for problem in problems:
        err.print(f"deploy check: {problem}", markup=False)
    status = "ok" if not stale and not problems else "FAILED"
    err.print(
        f"deploy check: {count} manifests (Kubernetes {KUBERNETES_VERSION}, KEDA) and 2 compose files, "
        f"{len(problems)} problems; {len(stale)} generated files stale: {status}",
        markup=False,
    )
    return 0 if status == "ok" else 1


def add_deploy_command(sub: Any, command: Callable[..., Any]) -> None:
    """Register `deploy` on the top-level subparsers."""
    dp = sub.add_parser(
        "deploy",
        help="the docker-compose workers, Prometheus scrape config and Kubernetes "
        "manifests rendered from the catalog",
    )
    actions = dp.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    command(
        actions,
        "render",
        deploy_render,
        "write ops/compose/workers.yml, ops/prometheus.yml and deploy/kubernetes/",
    )
    command(
        actions, "check", deploy_check, "the checked-in files are the catalog's, and the manifests validate"
    )
