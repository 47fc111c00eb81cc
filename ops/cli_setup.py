"""`ledgerstream stack | topics | schemas | db`: the local stack, the topic catalog against the broker, the
Avro schemas' gate, lock and registry, and the database's migrations."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AclBinding
from rich.table import Table

from ops.console import Parser, err, out, positive_int, settings_or_error
from topics.errors import LedgerstreamError


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


def db_seal(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from sinks.migrate import connect
    from sinks.sealing import plaintext_left, reseal, seal_plaintext

    settings = settings_or_error()
    keys = settings.field_keys()
    with connect(settings.database_url.get_secret_value()) as conn:
        conn.autocommit = True
        left = plaintext_left(conn)
        with Progress(transient=True, console=err) as progress:
            tasks = {t: progress.add_task(f"sealing {t}", total=n) for t, n in left.items()}
            sealed = seal_plaintext(
                conn,
                keys[0],
                batch_size=args.batch_size,
                progress=lambda table, done: progress.update(tasks[table], completed=done),
            )
            again = progress.add_task("re-sealing under the current key", total=None)
            resealed = reseal(
                conn,
                keys,
                batch_size=args.batch_size,
                progress=lambda table, done: progress.update(again, completed=done),
            )
    counts = ", ".join(f"{table} {n:,}" for table, n in sealed.items())
    moved = ", ".join(f"{table} {n:,}" for table, n in resealed.items())
    out.print(
        f"db seal: beneficiaries sealed: {counts}; the text columns are empty and checked so; "
        f"re-sealed under the current key: {moved}",
        markup=False,
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


def add_setup_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register these commands on the top-level subparsers."""
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
    seal = command(
        db_sub,
        "seal",
        db_seal,
        "seal the bank account details written as text before they were sealed, under the bank-details "
        "key (LEDGERSTREAM_FIELD_KEY), and check the text columns stay empty; re-seal under it what the "
        "keys of LEDGERSTREAM_FIELD_KEY_PREVIOUS sealed (a rotation)",
    )
    seal.add_argument(
        "--batch-size", type=positive_int, default=1000, help="rows per transaction (default 1000)"
    )
    command(
        db_sub, "status", db_status, "each migration: applied, pending or changed (exit 1 unless all applied)"
    )
