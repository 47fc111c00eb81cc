"""`ledgerstream`: the one command operators, analysts and CI use.

Every subcommand reads the same settings (environment variables, see
`ledgerstream stack env`) and reports errors as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from confluent_kafka.admin import AclBinding
from rich.table import Table

from ops.cli_auth import add_auth_commands
from ops.cli_chaos import add_chaos_command
from ops.cli_connect import add_connect_commands
from ops.cli_data import add_data_commands
from ops.cli_ledger import add_ledger_commands, balance_cells
from ops.cli_operate import add_operate_commands
from ops.cli_run import add_deploy_command, add_run_command
from ops.console import (
    Parser,
    component_settings,
    err,
    out,
    port_arg,
    positive_int,
    seconds_arg,
    serve_health,
    settings_or_error,
    stop_on_signals,
    topic_pair,
)
from topics.catalog import Catalog
from topics.errors import LedgerstreamError
from topics.settings import Settings

# stack ----------------------------------------------------------------------


def stack_up(args: argparse.Namespace) -> int:
    from ops.stack import Stack

    stack = Stack(settings_or_error(), registry=not args.no_registry)
    with err.status("starting the local stack (first run fetches Kafka and the registry from Maven Central)"):
        seconds = stack.up(say=lambda line: err.print(line, markup=False))
    err.print(f'stack up in {seconds:.1f}s; `eval "$(ledgerstream stack env)"` points clients at it')
    return 0


def stack_down(args: argparse.Namespace) -> int:
    from ops.stack import Stack

    Stack(settings_or_error()).down(say=lambda line: err.print(line, markup=False))
    return 0


def stack_status(args: argparse.Namespace) -> int:
    from ops.stack import Stack

    table = Table("service", "port", "pid", "health")
    statuses = Stack(settings_or_error()).status()
    for s in statuses:
        table.add_row(s.name, str(s.port), str(s.pid or "-"), s.state)
    out.print(table)
    return 0 if all(s.healthy for s in statuses) else 1


def stack_env(args: argparse.Namespace) -> int:
    import shlex

    from ops.stack import Stack

    for name, value in Stack(settings_or_error()).exports().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


# topics -----------------------------------------------------------------------


def topics_apply(args: argparse.Namespace) -> int:
    from ops.kafka_acl import apply_acls
    from ops.topic_admin import apply
    from topics.catalog import load_catalog

    settings = settings_or_error()
    catalog = load_catalog()
    profile = catalog.profile(args.profile or settings.topic_profile)
    if settings.kafka_security_protocol not in profile.security_protocols:
        raise LedgerstreamError(
            f"the {profile.name} profile allows only {', '.join(profile.security_protocols)}; "
            f"KAFKA_SECURITY_PROTOCOL is {settings.kafka_security_protocol}"
        )
    created, drifting = apply(settings, catalog, profile, fix_config=args.fix_config)
    out.print(
        f"topics apply ({profile.name}: RF {profile.replication_factor}, min.insync.replicas "
        f"{profile.min_insync_replicas}): {len(created)} created, "
        f"{len(catalog.topics) - len(created)} already present, {len(drifting)} drifting"
    )
    for name in created:
        out.print(f"  created {name}", markup=False)
    for state in drifting:
        for line in state.drift:
            out.print(f"  drift {state.name}: {line}", markup=False)
    acls = apply_acls(settings, catalog)
    if not acls.enforced:
        if profile.require_acls:
            raise LedgerstreamError(f"the broker has no authorizer: the {profile.name} profile requires ACLs")
        out.print("acls: the broker has no authorizer; every client may do anything (not for production)")
    else:
        out.print(
            f"acls ({len(catalog.principals())} principals): {acls.total} bindings, "
            f"{len(acls.created)} created, {len(acls.deleted)} removed"
        )
        for binding in acls.created:
            out.print(f"  granted {_binding(binding)}", markup=False)
        for binding in acls.deleted:
            out.print(f"  revoked {_binding(binding)}", markup=False)
        if acls.foreign:
            out.print(f"  left alone: ACLs of principals not in the catalog: {', '.join(acls.foreign)}")
    return 1 if drifting else 0


def topics_principals(args: argparse.Namespace) -> int:
    from ops.kafka_acl import ensure_credentials, upsert_scram_users
    from topics.catalog import load_catalog

    settings = settings_or_error()
    names = [p.name for p in load_catalog().principals()]
    credentials = ensure_credentials(settings.credentials_path, names)
    count = upsert_scram_users(settings, {n: credentials[n] for n in names})
    out.print(
        f"topics principals: {count} SCRAM-SHA-512 credentials set; passwords in {settings.credentials_path} "
        "(mode 0600)",
        markup=False,
    )
    return 0


def _binding(b: AclBinding) -> str:
    def name(value: object) -> str:
        return str(getattr(value, "name", value))

    pattern = "*" if name(b.resource_pattern_type) == "PREFIXED" else ""
    return f"{b.principal} {name(b.operation)} {name(b.restype).lower()} {b.name}{pattern}"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def topics_list(args: argparse.Namespace) -> int:
    from ops.topic_admin import inspect
    from topics.catalog import load_catalog

    settings = settings_or_error()
    catalog = load_catalog()
    profile = catalog.profile(args.profile or settings.topic_profile)
    table = Table("topic", "kind", "partitions (catalog/broker)", "key", "value", "status")
    for s in inspect(settings, catalog, profile):
        spec = s.spec
        table.add_row(
            s.name,
            spec.kind if spec else "-",
            f"{spec.partitions if spec else '-'}/{_dash(s.broker_partitions)}",
            (spec.key_field or "-") if spec else "-",
            spec.value_schema if spec and spec.value_schema == "raw" else ("avro" if spec else "?"),
            s.status + (f": {'; '.join(s.drift)}" if s.drift else ""),
        )
    out.print(table)
    return 0


# schemas ----------------------------------------------------------------------


def schemas_check(args: argparse.Namespace) -> int:
    from ops.schema_gate import check
    from topics.schemas import SchemaStore, read_lock

    store = SchemaStore(settings_or_error().avro_dir)
    findings = check(store, read_lock())
    if findings:
        for f in findings:
            err.print(f"schema gate: {f.message}", markup=False)
        err.print(f"schema gate: FAILED, {len(findings)} problem(s) in {len(store.topics())} schemas")
        return 1
    out.print(
        f"schema gate: ok, {len(store.topics())} schemas backward compatible with every released version"
    )
    return 0


def schemas_lock(args: argparse.Namespace) -> int:
    from ops.schema_gate import lock
    from topics.schemas import SchemaStore

    locked, refused = lock(SchemaStore(settings_or_error().avro_dir))
    for topic in locked:
        out.print(f"locked {topic}", markup=False)
    for f in refused:
        err.print(f"refused: {f.message}", markup=False)
    if not locked and not refused:
        out.print("schemas lock: nothing changed")
    return 1 if refused else 0


def schemas_register(args: argparse.Namespace) -> int:
    from ops.schema_gate import register
    from topics.schemas import SchemaStore

    settings = settings_or_error()
    if not settings.schema_registry_url:
        out.print(
            "schemas register: no SCHEMA_REGISTRY_URL; the codec uses single-object encoding, nothing to do"
        )
        return 0
    try:
        registered = register(settings, SchemaStore(settings.avro_dir))
    except Exception as e:
        if isinstance(e, LedgerstreamError):
            raise
        raise LedgerstreamError(f"schema registry at {settings.schema_registry_url}: {e}") from e
    out.print(f"schemas register: {len(registered)} subjects at {settings.schema_registry_url}")
    if args.verbose:
        for subject, schema_id in registered:
            out.print(f"  {subject}: id {schema_id}", markup=False)
    return 0


# db and sinks -----------------------------------------------------------------


def db_migrate(args: argparse.Namespace) -> int:
    from sinks.migrate import connect, migrate
    from sinks.roles import load_roles

    settings = settings_or_error()
    roles = load_roles().names()
    if settings.database_credentials_file is not None:  # named: a password for every role, made if missing
        from ops.kafka_acl import ensure_credentials

        passwords = ensure_credentials(settings.database_credentials_file, roles)
    else:
        passwords = settings.database_credentials()
    with connect(settings.database_url.get_secret_value()) as conn:
        applied = migrate(conn, passwords=passwords)
    for m in applied:
        out.print(f"applied {m.path.name}", markup=False)
    with_password = sum(1 for name in roles if name in passwords)
    where = settings.database_credentials_path
    said = f"{with_password} passwords set from {where}" if with_password else "passwords left as they are"
    out.print(
        f"db migrate: {len(applied)} applied, schema up to date; "
        f"{len(roles)} component roles granted (sinks/roles.toml), {said}"
    )
    return 0


def db_status(args: argparse.Namespace) -> int:
    from sinks.migrate import connect, status

    table = Table("version", "migration", "status", "applied at")
    with connect(settings_or_error().database_url.get_secret_value()) as conn:
        states = status(conn)
    for s in states:
        table.add_row(f"{s.migration.version:04d}", s.migration.name, s.status, str(s.applied_at or "-"))
    out.print(table)
    return 1 if any(s.changed or s.applied_at is None for s in states) else 0


def sink(args: argparse.Namespace) -> int:
    from sinks.base import SinkRunner
    from sinks.registry import SINKS
    from topics.codec import codec_from_settings

    settings = (
        settings_or_error()
        if args.operator
        else component_settings(f"{args.name}_sink", group=args.group, topics=args.topic)
    )
    stop = stop_on_signals()
    runner = SinkRunner(
        settings,
        SINKS[args.name](),
        codec_from_settings(settings),
        batch_size=args.batch_size,
        linger=args.linger,
        group_id=args.group,
        topics=args.topic,
        input_aliases=dict(args.alias or []),
    )
    err.print(f"sink {args.name}: consuming {', '.join(runner.topics)} as {runner.group_id}")
    health = serve_health(args.metrics_port, runner)
    try:
        stats = runner.run(stop=stop, idle_exit=args.idle_exit)
    finally:
        if health is not None:
            health.close()
    if args.json:
        import json

        from ops.process_stats import peak_rss_kb

        peak_kb = peak_rss_kb()
        fields = (
            "consumed",
            "written",
            "dead_lettered",
            "batches",
            "retries",
            "seconds",
            "busy_seconds",
            "db_seconds",
        )
        print(json.dumps({**{f: getattr(stats, f) for f in fields}, "peak_rss_kb": peak_kb}))
    err.print(
        f"sink {args.name}: {stats.written} written, {stats.dead_lettered} dead-lettered, "
        f"{stats.batches} batches, {stats.retries} retries in {stats.seconds:.1f}s"
    )
    return 0


def agent(args: argparse.Namespace) -> int:
    from streams.registry import AGENTS
    from streams.runtime import AgentRuntime, run_agent
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    settings = (
        settings_or_error()
        if args.operator
        else component_settings(f"{args.name}_agent", group=args.group, topics=args.topic)
    )
    stop = stop_on_signals()
    codec = codec_from_settings(settings)
    runtime = AgentRuntime(
        settings,
        AGENTS[args.name](settings, codec),
        codec,
        load_catalog(),
        batch_size=args.batch_size,
        linger=args.linger,
        group_id=args.group,
        topics=args.topic,
        input_aliases=dict(args.alias or []),
        output_topics=dict(args.output_to or []),
    )
    err.print(f"agent {args.name}: consuming {', '.join(runtime.topics)} as {runtime.group_id}")
    health = serve_health(args.metrics_port, runtime)
    try:
        stats = run_agent(runtime, stop=stop, idle_exit=args.idle_exit)
    finally:
        if health is not None:
            health.close()
    err.print(
        f"agent {args.name}: {stats.consumed} consumed, {stats.emitted} emitted, "
        f"{stats.dead_lettered} dead-lettered in {stats.batches} batches"
    )
    return 0


def billing_close(args: argparse.Namespace) -> int:
    from sinks.migrate import connect
    from streams.billing.agent import close_period

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        closed = close_period(conn, args.period, settings.environment, args.tenant)
    if not closed:
        out.print(f"billing close: no open {settings.environment} invoice for {args.period}", markup=False)
        return 0
    out.print(
        f"billing close: closed {args.period} for {', '.join(closed)}; later fees go to the next period",
        markup=False,
    )
    return 0


def billing_invoices(args: argparse.Namespace) -> int:
    from sinks.billing import invoice_totals
    from sinks.migrate import connect

    settings = settings_or_error()
    table = Table("tenant", "period", "status", "currency", "line items", "total (minor units)")
    with connect(settings.database_url.get_secret_value()) as conn:
        rows = invoice_totals(conn, settings.environment, tenant=args.tenant, period=args.period)
    for tenant, period, status, currency, items, total in rows:
        table.add_row(tenant, period, status, currency, str(items), f"{total:,}")
    out.print(table)
    return 0


def aml_flags(args: argparse.Namespace) -> int:
    from sinks.aml import recent_flags
    from sinks.migrate import connect

    settings = settings_or_error()
    table = Table("flag", "account", "rule", "version", "risk", "status", "raised at (UTC)")
    with connect(settings.database_url.get_secret_value()) as conn:
        rows = recent_flags(
            conn, settings.environment, account=args.account, status=args.status, limit=args.limit
        )
    for flag, account, rule, version, score, status, at in rows:
        table.add_row(str(flag), account, rule, version, str(score), status, at.isoformat(timespec="seconds"))
    out.print(table)
    return 0


def aml_case(args: argparse.Namespace) -> int:
    from sinks.aml import set_case_status
    from sinks.migrate import connect

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        row = set_case_status(conn, settings.environment, args.flag_id, args.status)
    if row is None:
        err.print(f"aml case: no {settings.environment} flag {args.flag_id}", markup=False)
        return 1
    out.print(f"aml case: flag {args.flag_id} ({row[1]} on {row[0]}) is now {args.status}", markup=False)
    return 0


def audit_trace(args: argparse.Namespace) -> int:
    from ops.audit_trace import trace
    from sinks.migrate import connect

    settings = settings_or_error()
    with connect(settings.database_url.get_secret_value()) as conn:
        steps = trace(conn, args.correlation_id, settings.environment)
    if not steps:
        err.print(f"audit trace: nothing recorded for correlation id {args.correlation_id!r}", markup=False)
        return 1
    table = Table("time (UTC)", "topic", "entity", "actor", "change", "notes")
    for step in steps:
        table.add_row(step.time, step.topic, step.entity, step.actor, step.change, step.notes)
    out.print(table)
    out.print(f"{len(steps)} events across {len({s.topic for s in steps})} topics", markup=False)
    return 0


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

        e2e = bench_e2e(settings_or_error(), load_catalog(), args.rate, args.seconds, args.workers)
        for line in e2e.lines():
            out.print(line, markup=False)
        return 0
    if args.target == "agent":
        from ops.dev.bench_agent import bench_agent
        from topics.catalog import load_catalog

        if args.workers != 1:
            err.print("bench agent: --workers is not supported (one agent process)", markup=False)
            return 2
        measured = bench_agent(settings_or_error(), load_catalog(), args.agent, args.events, args.batch_size)
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
            settings_or_error(), load_catalog(), args.events, args.accounts, args.batch_size
        )
        for line in reservations.lines():
            out.print(line, markup=False)
        return 0
    run = bench_sink if args.target == "sink" else bench_ledger
    result = run(settings_or_error(), args.events, args.batch_size, args.workers)
    for line in result.lines():
        out.print(line, markup=False)
    return 0


# demo -------------------------------------------------------------------------


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


def _pipeline(settings: Settings, catalog: Catalog, *, in_process: bool) -> None:
    import uuid

    from ops.dev.pipeline_demo import run_pipeline
    from ops.supervise import Supervisor, own_groups, plan
    from topics.codec import codec_from_settings

    codec = codec_from_settings(settings)
    supervisor, started = Supervisor(settings.stack_dir / "run"), False
    if not in_process:
        workers = plan(catalog, only=["agents", "sinks", "outbox_relay"])
        if supervisor.pid() is None:
            workers = own_groups(settings, catalog, workers, f"demo-{uuid.uuid4().hex[:6]}")
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
            report = run_pipeline(settings, codec, catalog, workers_running=not in_process)
    finally:
        codec.close()
        if started:
            supervisor.stop()
            err.print("demo: the run's workers stopped")
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


# wiring -------------------------------------------------------------------------


def schemas_decode_check(args: argparse.Namespace) -> int:
    from ops.stock_decode import stock_decode
    from topics.catalog import load_catalog

    if not settings_or_error().schema_registry_url:
        out.print(
            "schemas decode-check: skipped, no schema registry (the topics hold the single-object framing)"
        )
        return 0
    from ops.topic_reader import parse_time

    from_ms = parse_time(args.from_time) if args.from_time else None
    with err.status("decoding") as status:
        results = stock_decode(
            settings_or_error(), load_catalog(), lambda t: status.update(f"decoding {t}"), from_ms=from_ms
        )
    decoded, failed = sum(r.decoded for r in results), sum(r.failed for r in results)
    for r in results:
        for line in r.first_failures:
            err.print(f"  {line}", markup=False)
    out.print(
        f"schemas decode-check: confluent-kafka's AvroDeserializer decoded {decoded} messages of "
        f"{len(results)} topics{f' from {args.from_time}' if args.from_time else ''}, {failed} failed"
        + ("" if failed else " (every topic in the registry framing)")
    )
    return 1 if failed else 0


def build_parser() -> Parser:
    parser = Parser(
        prog="ledgerstream",
        description="ledgerstream: event backbone for open banking, cards and crypto. "
        "Settings come from the environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, REDIS_URL, "
        "SCHEMA_REGISTRY_URL); the defaults name the local stack.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction,
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
    ) -> Parser:
        p: Parser = group.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    stack = sub.add_parser("stack", help="the local stack: Kafka (KRaft), PostgreSQL, Redis, schema registry")
    stack_sub = stack.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    up = command(stack_sub, "up", stack_up, "start every service not yet running and wait until each answers")
    up.add_argument("--no-registry", action="store_true", help="run without the schema registry")
    command(stack_sub, "down", stack_down, "stop what `up` started, by PID")
    command(
        stack_sub,
        "status",
        stack_status,
        "each service's port, PID and health (exit 1 if any is down)",
    )
    command(
        stack_sub,
        "env",
        stack_env,
        "print export lines for KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, ...",
    )

    topics = sub.add_parser("topics", help="the topic catalog against the broker")
    topics_sub = topics.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    ap = command(
        topics_sub,
        "apply",
        topics_apply,
        "create missing catalog topics, report drift (never shrinks or recreates; exit 1 on drift), "
        "and make each principal's ACLs the catalog's",
    )
    ap.add_argument(
        "--profile",
        choices=["dev", "prod"],
        help="replication profile (default: LEDGERSTREAM_TOPIC_PROFILE or dev)",
    )
    ap.add_argument(
        "--fix-config", action="store_true", help="also set drifted topic configs to the catalog's"
    )
    command(
        topics_sub,
        "principals",
        topics_principals,
        "give every catalog principal a SCRAM credential (new passwords go to the credentials file; "
        "`stack up` does this for the local stack)",
    )
    ls = command(topics_sub, "list", topics_list, "catalog versus broker, one row per topic")
    ls.add_argument("--profile", choices=["dev", "prod"], help="replication profile to compare against")

    schemas = sub.add_parser("schemas", help="the Avro schemas: compatibility gate, lock, registry")
    schemas_sub = schemas.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    command(
        schemas_sub,
        "check",
        schemas_check,
        "fail unless every schema is backward compatible with every released (locked) version",
    )
    command(
        schemas_sub,
        "lock",
        schemas_lock,
        "record the current schemas as released (refuses incompatible ones)",
    )
    reg = command(
        schemas_sub,
        "register",
        schemas_register,
        "register every schema version with the schema registry",
    )
    reg.add_argument("-v", "--verbose", action="store_true", help="print each subject and id")
    check = command(
        schemas_sub,
        "decode-check",
        schemas_decode_check,
        "decode every message of every topic with confluent-kafka's stock AvroDeserializer (1 on a failure)",
    )
    check.add_argument(
        "--from-time",
        help="only messages at or after this time (ISO 8601 or epoch ms; default: every message)",
    )

    db = sub.add_parser("db", help="the PostgreSQL schema: versioned migrations")
    db_sub = db.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    command(db_sub, "migrate", db_migrate, "apply pending migrations in order (refuses edited ones)")
    command(
        db_sub, "status", db_status, "each migration: applied, pending or changed (exit 1 unless all applied)"
    )

    from sinks.registry import SINKS

    sk = command(sub, "sink", sink, "run one sink (its own consumer group) until interrupted")
    sk.add_argument("name", choices=sorted(SINKS), help="which sink")
    sk.add_argument(
        "--batch-size", type=positive_int, default=2000, help="most events per transaction (default 2000)"
    )
    sk.add_argument(
        "--linger",
        type=seconds_arg,
        default=0.01,
        help="the longest one poll waits for events; what arrived goes to an idle worker (default 0.01)",
    )
    sk.add_argument("--idle-exit", type=seconds_arg, default=None, help="stop after this many idle seconds")
    sk.add_argument(
        "--group", help="consumer group (default ledgerstream.<sink>; a new group replays from the start)"
    )
    sk.add_argument(
        "--topic", action="append", help="consume this topic instead of the sink's own (repeatable)"
    )
    sk.add_argument("--json", action="store_true", help="print the run's figures as one JSON line on stdout")
    sk.add_argument(
        "--alias",
        type=topic_pair,
        action="append",
        metavar="COPY=TOPIC",
        help="read COPY (given with --topic) as the catalog topic TOPIC, e.g. a scratch copy (repeatable)",
    )
    sk.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    sk.add_argument(
        "--operator",
        action="store_true",
        help="run as the operator principal, not the component's own "
        "(a replay onto a scratch topic or a group outside the catalog)",
    )

    from streams.registry import AGENTS

    ag = command(sub, "agent", agent, "run one agent (a Faust agent fed batches; its own consumer group)")
    ag.add_argument("name", choices=sorted(AGENTS), help="which agent")
    ag.add_argument(
        "--batch-size", type=positive_int, default=2000, help="most events per batch (default 2000)"
    )
    ag.add_argument(
        "--linger",
        type=seconds_arg,
        default=0.01,
        help="the longest one poll waits for events; what arrived goes to an idle worker (default 0.01)",
    )
    ag.add_argument("--idle-exit", type=seconds_arg, default=None, help="stop after this many idle seconds")
    ag.add_argument("--group", help="consumer group (default ledgerstream.<agent>; a new group replays)")
    ag.add_argument(
        "--topic", action="append", help="consume this topic instead of the agent's own (repeatable)"
    )
    ag.add_argument(
        "--alias",
        type=topic_pair,
        action="append",
        metavar="COPY=TOPIC",
        help="read COPY (given with --topic) as the catalog topic TOPIC, e.g. a scratch copy (repeatable)",
    )
    ag.add_argument(
        "--output-to",
        type=topic_pair,
        action="append",
        metavar="TOPIC=COPY",
        help="write the output topic TOPIC's events to COPY instead, e.g. a scratch copy (repeatable)",
    )
    ag.add_argument(
        "--metrics-port",
        type=port_arg,
        default=None,
        help="serve /healthz, /readyz and /metrics on this port (0 picks a free one; default: none)",
    )
    ag.add_argument(
        "--operator",
        action="store_true",
        help="run as the operator principal, not the component's own "
        "(a replay onto a scratch topic or a group outside the catalog)",
    )

    billing = sub.add_parser("billing", help="invoices: totals per tenant and period, closing a period")
    billing_sub = billing.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    close = command(
        billing_sub,
        "close",
        billing_close,
        "close a period's open invoices now (later fees go to the next one)",
    )
    close.add_argument("--period", type=_period, required=True, help="billing period, YYYY-MM (UTC months)")
    close.add_argument("--tenant", help="only this tenant's invoice (default: every tenant)")
    inv = command(billing_sub, "invoices", billing_invoices, "invoice totals per currency")
    inv.add_argument("--tenant", help="only this tenant")
    inv.add_argument("--period", type=_period, help="only this period, YYYY-MM")

    add_connect_commands(sub, command)
    add_run_command(sub, command)
    add_deploy_command(sub, command)
    add_data_commands(sub, command)
    add_chaos_command(sub, command)
    add_operate_commands(sub, command)
    add_ledger_commands(sub, command)
    add_auth_commands(sub, command)

    aml = sub.add_parser("aml", help="AML flags and their cases")
    aml_sub = aml.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    fl = command(aml_sub, "flags", aml_flags, "flags raised, newest first, by account and case status")
    fl.add_argument("--account", help="only this account")
    fl.add_argument("--status", choices=CASE_STATUSES, help="only this case status")
    fl.add_argument("--limit", type=positive_int, default=50, help="most rows (default 50)")
    cs = command(aml_sub, "case", aml_case, "move a flag's case to reviewed, dismissed or escalated")
    cs.add_argument("flag_id", help="the flag's id")
    cs.add_argument("--status", choices=CASE_STATUSES, required=True, help="the case's new status")

    audit = sub.add_parser("audit", help="the append-only audit trail")
    audit_sub = audit.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    tr = command(
        audit_sub, "trace", audit_trace, "the whole story of one request across topics, in time order"
    )
    tr.add_argument("correlation_id", help="the correlation id the request got at the edge")

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
        "e2e: signed webhooks at a fixed rate to their journal rows, each stage its own process",
    )
    bn.add_argument(
        "--rate", type=positive_int, default=2000, help="e2e: deliveries per second (default 2000)"
    )
    bn.add_argument(
        "--agent", choices=["fees", "ledger"], default="fees", help="agent: which agent (default fees)"
    )
    bn.add_argument(
        "--accounts", type=positive_int, default=1000, help="reservations: funded accounts (default 1000)"
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
        help="sink processes in one consumer group, or webhook service processes (webhooks, e2e; default 1)",
    )
    bn.add_argument("--batch-size", type=positive_int, default=2000, help="sink batch size (default 2000)")

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
    return parser


CASE_STATUSES = ["open", "reviewed", "dismissed", "escalated"]


def _period(text: str) -> str:
    from streams.billing.invoicing import BillingError, next_period

    try:
        next_period(text)
    except BillingError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a period like 2026-11") from None
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ledgerstream` command."""
    from topics.ports import port_offset

    try:
        port_offset()
    except LedgerstreamError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except LedgerstreamError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 1
    except OSError as e:
        err.print(f"ledgerstream: error: {e}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("ledgerstream: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
