"""`ledgerstream bench | demo`: measuring on the local stack, and the pipeline's round trip that
`make run` shows."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException
from rich.table import Table

from ops.cli_ledger import balance_cells
from ops.console import err, out, positive_int, settings_or_error, share
from topics.catalog import Catalog
from topics.errors import LedgerstreamError
from topics.settings import Settings


def bench(args: argparse.Namespace) -> int:
    from ops.dev.bench import bench_ledger, bench_sink

    if args.target == "webhooks":
        from ops.dev.bench_webhooks import BenchLimit, bench_webhooks

        try:
            hooks = bench_webhooks(
                settings_or_error(), int(args.seconds), args.connections, workers=args.workers
            )
        except BenchLimit as e:
            err.print(f"bench webhooks: {e}", markup=False)
            return 2
        for line in hooks.lines():
            out.print(line, markup=False)
        return 0
    if args.target == "e2e":
        from ops.dev.bench_e2e import bench_e2e
        from topics.catalog import load_catalog

        e2e = bench_e2e(
            settings_or_error(), load_catalog(), args.rate, args.seconds, args.workers, args.commands
        )
        for line in e2e.lines():
            out.print(line, markup=False)
        return 0
    from sinks.base import DEFAULT_BATCH_SIZE as SINK_BATCH_SIZE
    from topics.runtime import DEFAULT_BATCH_SIZE as AGENT_BATCH_SIZE

    if args.target == "agent":
        from ops.dev.bench_agent import bench_agent
        from topics.catalog import load_catalog

        measured = bench_agent(
            settings_or_error(),
            load_catalog(),
            args.agent,
            args.events,
            args.batch_size or AGENT_BATCH_SIZE,
            args.accounts,
            args.workers,
        )
        for line in measured.lines():
            out.print(line, markup=False)
        return 0
    if args.target == "reservations":
        from ops.dev.bench_reservations import bench_reservations
        from topics.catalog import load_catalog

        if args.workers != 1:
            err.print("bench reservations: --workers is not supported (one status agent)", markup=False)
            return 2
        reservations = bench_reservations(
            settings_or_error(),
            load_catalog(),
            args.events,
            args.accounts,
            args.batch_size or AGENT_BATCH_SIZE,
        )
        for line in reservations.lines():
            out.print(line, markup=False)
        return 0
    run = bench_sink if args.target == "sink" else bench_ledger
    result = run(settings_or_error(), args.events, args.batch_size or SINK_BATCH_SIZE, args.workers)
    for line in result.lines():
        out.print(line, markup=False)
    return 0


def demo(args: argparse.Namespace) -> int:
    from ops.dev.roundtrip import TOPIC, round_trip
    from topics.catalog import load_catalog
    from topics.codec import AvroCodec, codec_from_settings
    from topics.schemas import load_store

    settings = settings_or_error()
    catalog = load_catalog()
    codecs = [AvroCodec(load_store(settings.avro_dir))]
    if settings.schema_registry_url:
        codecs.insert(0, codec_from_settings(settings))
    else:
        out.print("no schema registry configured: only the single-object framing is shown")
    failed = False
    for codec in codecs:
        report = round_trip(settings, codec, catalog, accounts=args.accounts, per_account=args.events)
        failed |= not report.ok
        out.print(
            f"round trip ({report.framing} framing) of {TOPIC} events on scratch topic {report.topic}: "
            f"produced {report.produced}, consumed "
            f"{report.consumed} from {len(report.partitions)} partitions, {report.accounts} accounts "
            f"in order: {'yes' if not report.out_of_order else 'NO'}, amounts exact: "
            f"{'yes' if not report.mismatched else 'NO'} ({report.seconds:.2f}s)"
        )
        for line in (report.out_of_order + report.mismatched)[:10]:
            err.print(f"  {line}", markup=False)
        codec.close()
    if failed:
        return 1
    _pipeline(settings, catalog, in_process=args.in_process)
    return 0


def _drop_groups(settings: Settings, suffix: str) -> None:
    """The demo's own consumer groups, deleted once its workers stopped (said, not fatal, if not)."""
    from topics.consuming import drop_own_groups

    try:
        dropped = drop_own_groups(settings, suffix)
    except (LedgerstreamError, KafkaException) as e:
        err.print(f"demo: {e}; `ledgerstream status` lists them", markup=False)
        return
    err.print(
        f"demo: its {len(dropped)} consumer groups (ledgerstream.<name>.{suffix}) deleted", markup=False
    )


def _pipeline(settings: Settings, catalog: Catalog, *, in_process: bool) -> None:
    import uuid

    from ops.dev.pipeline_demo import run_pipeline
    from ops.supervise import Supervisor, own_groups, plan
    from topics.codec import codec_from_settings

    codec = codec_from_settings(settings)
    supervisor, started = Supervisor(settings.stack_dir / "run"), False
    suffix = f"demo-{uuid.uuid4().hex[:6]}"
    if not in_process:
        workers = plan(catalog, only=["agents", "sinks", "outbox_relay"])
        if supervisor.pid() is None:
            workers = own_groups(settings, catalog, workers, suffix)
            supervisor.write(workers)
            err.print(f"demo: `ledgerstream run` starts {len(workers)} workers (logs in {supervisor.folder})")
            supervisor.start_detached(workers, 120)
            started = True
        elif missing := {w.name for w in workers} - {s.name for s in supervisor.states()}:
            raise LedgerstreamError(
                f"the run going in {supervisor.folder} lacks {', '.join(sorted(missing))}"
            )
        else:
            err.print(f"demo: using the workers of the run going in {supervisor.folder}")
    try:
        with err.status("the status, fees, FX, billing, AML and ledger agents and their sinks at work"):
            report = run_pipeline(settings, codec, catalog, workers_running=not in_process, own_groups=suffix)
    finally:
        codec.close()
        if started:
            supervisor.stop()
            err.print("demo: the run's workers stopped")
        if started or in_process:
            _drop_groups(settings, suffix)
    inputs = Table("connector", "sent", "answer", "result")
    for row in report.connectors:
        inputs.add_row(*row)
    out.print(inputs)
    out.print(f"\npipeline: {len(report.transactions)} transfers settled in {report.seconds:.1f}s")
    out.print("steps: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.steps))
    table = Table("transaction", "status", "version", "amount (minor units)", "lifecycle")
    for tid, status, version, units in report.transactions:
        table.add_row(tid, status, str(version), f"{units:,}", " > ".join(report.history.get(tid, [])))
    out.print(table)
    fees = Table("charged for", "tier", "category", "amount", "currency", "schedule")
    for charged, tier, category, amount, currency, schedule in report.fees:
        fees.add_row(charged, tier, category, f"{amount:,}", currency, schedule)
    out.print(fees)
    if report.conversion:
        pair, sold, sold_ccy, bought, bought_ccy, market, rate, markup = report.conversion
        out.print(
            f"conversion {pair}: sold {sold:,} {sold_ccy} minor units, bought {bought:,} {bought_ccy} at "
            f"{rate.normalize()} (market {market.normalize()} less {markup} bps markup)"
        )
    flags = Table("AML flag on account", "rule", "risk", "evidence")
    for account, rule, score, evidence in report.flags:
        flags.add_row(account, rule, str(score), evidence)
    out.print(flags)
    out.print("sanctioned transfer: " + " > ".join(report.blocked), markup=False)
    steps = Table(f"audit trace {report.trace_id}: time (UTC)", "topic", "entity", "actor", "change")
    for step in report.trace:
        steps.add_row(step.time, step.topic, step.entity, step.actor, step.change)
    out.print(steps)
    invoice = Table("invoice period (tenant-demo)", "status", "currency", "total (minor units)")
    for period, status, currency, total in report.invoice:
        invoice.add_row(period, status, currency, f"{total:,}")
    out.print(invoice)
    journal = Table("journal reference", "ledger account", "side", "amount", "currency")
    for ref, account, side, amount, currency in report.journals:
        journal.add_row(ref, account, side, f"{amount:,}", currency)
    out.print(journal)
    out.print("card purchase: " + "; ".join(report.card), markup=False)
    accounts = Table("account", "currency", "posted", "held", "available", title="customer balances")
    for b in report.accounts:
        accounts.add_row(b.account_id, b.currency, *balance_cells(b))
    out.print(accounts)
    balances = Table("ledger account", "debits", "credits", "balance (debits - credits)")
    for account, debits, credits in report.balances:
        balances.add_row(account, f"{debits:,}", f"{credits:,}", f"{debits - credits:,}")
    out.print(balances)
    trial = ", ".join(f"{c} {v}" for c, v in sorted(report.trial_balance.items()))
    ok = all(v == 0 for v in report.trial_balance.values())
    out.print(
        f"trial balance over every account, per currency: {trial} ({'balanced' if ok else 'NOT BALANCED'})"
    )


def add_dev_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register these commands on the top-level subparsers."""
    bn = command(
        sub,
        "bench",
        bench,
        "measure a sink against raw COPY, an agent against a minimal loop, or the webhook endpoint "
        "under load (scratch database and topics)",
    )
    bn.add_argument(
        "target",
        choices=["sink", "ledger", "agent", "reservations", "webhooks", "e2e"],
        help="sink: one row per event; ledger: balanced transfers; agent: one agent against a minimal "
        "confluent-kafka loop running its handler; reservations: transfer requests decided "
        "against funded accounts by the status agent; webhooks: signed deliveries under wrk; "
        "e2e: signed webhooks and API commands at a fixed rate to their journal rows, each stage its "
        "own process",
    )
    bn.add_argument(
        "--rate", type=positive_int, default=2000, help="e2e: requests per second in all (default 2000)"
    )
    bn.add_argument(
        "--commands",
        type=share,
        default=0.25,
        help="e2e: the share of the requests that are API FX orders, the rest signed webhooks "
        "(0 to 1; default 0.25)",
    )
    bn.add_argument(
        "--agent",
        choices=["fees", "ledger", "status", "aml", "fx"],
        default="fees",
        help="agent: which agent (default fees); status, aml and fx run on a scratch database and an "
        "empty scratch Redis database",
    )
    bn.add_argument(
        "--accounts",
        type=positive_int,
        default=1000,
        help="reservations, agent: accounts the events are spread over, funded where they are spent "
        "from (default 1000)",
    )
    bn.add_argument(
        "--seconds",
        type=positive_int,
        default=10,
        help="webhooks: seconds per phase; e2e: seconds of sending (default 10)",
    )
    bn.add_argument(
        "--connections", type=positive_int, default=32, help="webhooks: open connections (default 32)"
    )
    bn.add_argument("--events", type=positive_int, default=200_000, help="events to produce (default 200000)")
    bn.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="sink processes in one consumer group; agent: also run this many agent processes in one "
        "group; webhook service processes (webhooks, e2e); default 1",
    )
    bn.add_argument(
        "--batch-size",
        type=positive_int,
        help="most events per batch (default: the component's own, 5000 for a sink, 2000 for an agent)",
    )

    dm = command(sub, "demo", demo, "run the pipeline's round trip on the local stack and print what it did")
    dm.add_argument(
        "--accounts", type=positive_int, default=8, help="accounts to spread events over (default 8)"
    )
    dm.add_argument("--events", type=positive_int, default=25, help="events per account (default 25)")
    dm.add_argument(
        "--in-process",
        action="store_true",
        help="run the agents, sinks and relay as threads of the demo, not as `ledgerstream run` processes",
    )
