"""`ledgerstream dlq ...` and `offsets ...`: what operators do to the running pipeline, each recorded."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ops.console import Parser, err, out, positive_int, settings_or_error
from topics.errors import LedgerstreamError


def _consumer(text: str) -> str:
    from topics.catalog import load_catalog

    consumers = load_catalog().consumers
    if text not in consumers:
        raise argparse.ArgumentTypeError(f"{text!r} is not a consumer ({', '.join(sorted(consumers))})")
    return text


def _per_second(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of messages per second") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def dlq_list(args: argparse.Namespace) -> int:
    import psycopg
    from rich.table import Table

    from ops.dead_letters import dead_letter, group_dead_letters, read_dead_letters, redriven_offsets
    from topics.catalog import dlq_topic, load_catalog

    settings = settings_or_error()
    consumers = [args.consumer] if args.consumer else sorted(load_catalog().consumers)
    table = Table("consumer", "error", "reason", "count", "redriven", "first seen", "last seen", "from")
    total = 0
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        for consumer in consumers:
            letters = [dead_letter(m) for m in read_dead_letters(settings, consumer)]
            done = set(redriven_offsets(conn, dlq_topic(consumer)))
            for g in group_dead_letters(letters, done):
                total += g.count
                table.add_row(
                    g.consumer,
                    g.error_class,
                    g.reason,
                    str(g.count),
                    str(g.redriven),
                    _when(g.first_ms),
                    _when(g.last_ms),
                    ", ".join(sorted(g.origins)),
                )
    if total:
        out.print(table)
    out.print(f"{total} dead letters in {len(consumers)} dead-letter topics")
    return 0


def _select(args: argparse.Namespace, settings: Any) -> list[Any]:
    from ops.dead_letters import dead_letter, read_dead_letters

    chosen = []
    for msg in read_dead_letters(settings, args.consumer):
        d = dead_letter(msg)
        if args.offset is not None and (
            d.offset not in args.offset or (args.partition not in (None, d.partition))
        ):
            continue
        if args.origin is not None and d.origin != args.origin:
            continue
        if args.error_class is not None and d.error_class != args.error_class:
            continue
        if args.matching is not None and args.matching not in d.reason:
            continue
        chosen.append(msg)
    return chosen


def dlq_show(args: argparse.Namespace) -> int:
    import psycopg

    from ops.dead_letters import dead_letter, redriven_offsets
    from ops.topic_reader import framing_of, jsonable
    from topics.catalog import dlq_topic
    from topics.codec import DecodeError, codec_from_settings
    from topics.deadletter import SealError, open_value

    settings = settings_or_error()
    letters = _select(args, settings)[-args.limit :]
    codec = codec_from_settings(settings)
    key = settings.dead_letter_key()
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        done = redriven_offsets(conn, dlq_topic(args.consumer))
    for msg in letters:
        d = dead_letter(msg)
        shown: dict[str, Any] = {
            "dead_letter": f"{dlq_topic(args.consumer)}/{d.partition}/{d.offset}",
            "origin": d.origin,
            "consumer": d.consumer,
            "error_class": d.error_class,
            "reason": d.reason,
            "at": _when(d.time_ms),
            "key": d.key.decode(errors="replace") if d.key is not None else None,
            "redriven": done.get((d.partition, d.offset), 0),
        }
        try:
            value = open_value(key, msg)
        except SealError as e:
            shown["value_error"] = str(e)
        else:
            shown["framing"] = framing_of(value)
            try:
                shown["value"] = jsonable(codec.decode(value, topic=d.origin_topic))  # type: ignore[arg-type]
            except DecodeError as e:
                shown["value_error"] = str(e)
                shown["value_head_hex"] = (value or b"")[:64].hex()
        out.print_json(json.dumps(shown))
    codec.close()
    if not letters:
        err.print(f"dlq show: no dead letter of {args.consumer} matches")
    return 0


def dlq_redrive(args: argparse.Namespace) -> int:
    import psycopg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ops.dead_letters import redrive

    if not (args.all or args.offset or args.origin or args.error_class or args.matching):
        err.print(
            "dlq redrive: select dead letters (--offset, --origin, --error-class, --matching) or pass --all"
        )
        return 2
    settings = settings_or_error()
    letters = _select(args, settings)
    if not letters:
        err.print(f"dlq redrive: no dead letter of {args.consumer} matches")
        return 1
    if args.dry_run:
        out.print(
            f"dlq redrive: would send {len(letters)} dead letters of {args.consumer} "
            f"to {args.to or 'their origin topics'} (dry run; nothing sent)"
        )
        return 0
    with (
        psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn,
        Progress(
            TextColumn("redrive"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("redrive", total=len(letters))
        result = redrive(
            settings,
            conn,
            args.consumer,
            letters,
            reason=args.reason,
            to_topic=args.to,
            per_second=args.rate,
            force=args.force,
            progress=lambda n: bar.update(task, completed=n),
        )
    for line in result.skipped:
        err.print(f"  skipped {line}", markup=False)
    out.print(
        f"dlq redrive: {result.sent} sent, {len(result.skipped)} skipped"
        + (f" (operation {result.operation_id})" if result.sent else "")
    )
    return 0 if result.sent or not result.skipped else 1


SINK_NAMES = ("aml", "audit", "billing", "fees", "fx", "ledger", "transfers")


def add_operate_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register `dlq`, `status`, `replay` and `offsets` on the top-level subparsers."""
    dlq = sub.add_parser("dlq", help="dead letters: list them, show one decoded, redrive them")
    actions = dlq.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    ls: Parser = command(actions, "list", dlq_list, "dead letters grouped by consumer, error and reason")
    ls.add_argument("--consumer", type=_consumer, help="only this consumer's (default: every consumer)")

    def selection(p: Parser) -> None:
        p.add_argument("consumer", type=_consumer, help="whose dead letters, e.g. ledger_sink")
        p.add_argument(
            "--offset", type=int, action="append", help="the dead letter at this offset (repeatable)"
        )
        p.add_argument(
            "--partition", type=int, help="with --offset: of this partition of the dead-letter topic"
        )
        p.add_argument("--origin", help="the dead letter of this origin: TOPIC/PARTITION/OFFSET")
        p.add_argument("--error-class", help="only dead letters refused with this error class")
        p.add_argument("--matching", help="only dead letters whose reason contains this text")

    sh: Parser = command(
        actions, "show", dlq_show, "dead letters with their origin and decoded original value"
    )
    selection(sh)
    sh.add_argument("--limit", type=positive_int, default=5, help="the last N that match (default 5)")
    rd: Parser = command(
        actions,
        "redrive",
        dlq_redrive,
        "send dead letters back to their origin topic (or --to), rate-limited, each once, recorded",
    )
    selection(rd)
    rd.add_argument("--all", action="store_true", help="every dead letter of the consumer")
    rd.add_argument("--to", help="send to this topic instead of each one's origin")
    rd.add_argument("--rate", type=_per_second, default=100.0, help="most messages per second (default 100)")
    rd.add_argument("--force", action="store_true", help="send again those already redriven")
    rd.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    rd.add_argument("--reason", required=True, help="why: recorded in the operations log (required)")

    st: Parser = command(
        sub,
        "status",
        status,
        "the pipeline at a glance: each group's lag and dead letters, each topic's last event",
    )
    st.add_argument("--partitions", action="store_true", help="also list every partition that lags")

    rp: Parser = command(
        sub,
        "replay",
        replay,
        "re-feed one range of a topic into a sink or onto another topic while the groups keep running",
    )
    rp.add_argument("--topic", required=True, help="the topic to read")
    rp.add_argument(
        "--as", dest="as_topic", metavar="TOPIC", help="read --topic (a scratch copy) as this catalog topic"
    )
    rp.add_argument("-p", "--partition", type=int, action="append", help="only this partition (repeatable)")
    rp.add_argument(
        "--account", help="only this account's events (the key), leaving every other account alone"
    )
    first = rp.add_mutually_exclusive_group(required=True)
    first.add_argument("--from-offset", type=int, help="the first offset (per partition)")
    first.add_argument("--from-time", help="the first event at or after this time (ISO 8601 or epoch ms)")
    last = rp.add_mutually_exclusive_group()
    last.add_argument("--to-offset", type=int, help="the last offset, included (default: the end)")
    last.add_argument("--to-time", help="events before this time only (default: the end)")
    into = rp.add_mutually_exclusive_group(required=True)
    into.add_argument(
        "--into-sink", choices=sorted(SINK_NAMES), help="write with this sink's mapping and SQL"
    )
    into.add_argument("--to-topic", help="copy the events, byte for byte, onto this topic (a scratch copy)")
    rp.add_argument(
        "--dry-run", action="store_true", help="do everything, then roll it back: what would change"
    )
    rp.add_argument("--reason", help="why: required unless --dry-run, recorded in the operations log")

    offsets = sub.add_parser("offsets", help="consumer group offsets: show them, reset them (dry run first)")
    actions = offsets.add_subparsers(dest="action", required=True, parser_class=Parser, metavar="ACTION")
    show: Parser = command(
        actions, "show", offsets_show, "a group's committed offset, end and lag per partition"
    )
    reset: Parser = command(
        actions,
        "reset",
        offsets_reset,
        "move a group's offsets: a dry run with a plan (events and money per partition) unless --execute",
    )
    for p in (show, reset):
        p.add_argument("group", help="a catalog consumer (fees_agent) or a group id")
        p.add_argument(
            "--topic", action="append", help="only this topic (repeatable; default: the consumer's inputs)"
        )
        p.add_argument(
            "-p", "--partition", type=int, action="append", help="only this partition (repeatable)"
        )
    reset.add_argument("--to-earliest", action="store_true", help="the first offset still kept")
    reset.add_argument("--to-latest", action="store_true", help="the end: skip everything not yet consumed")
    reset.add_argument("--to-offset", type=int, help="this offset (clamped to each partition's range)")
    reset.add_argument("--to-datetime", help="the first offset at or after this time (ISO 8601 or epoch ms)")
    reset.add_argument(
        "--by-duration", help="the first offset at or after this long ago (90s, 15m, 2h, 1d, PT1H)"
    )
    reset.add_argument("--shift-by", type=int, help="this many offsets from the current one (negative: back)")
    reset.add_argument("--execute", action="store_true", help="apply the plan (default: a dry run)")
    reset.add_argument("--reason", help="why: required with --execute, recorded in the operations log")
    reset.add_argument("--export", metavar="FILE.csv", help="also write the plan as CSV")
    reset.add_argument("--no-money", action="store_true", help="do not read the range to count events' money")


def _offsets_planner(args: argparse.Namespace) -> Any:
    from ops.offsets import OffsetPlanner, group_of
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    catalog = load_catalog()
    group = group_of(args.group, list(catalog.consumers))
    consumer = catalog.consumers.get(group.removeprefix("ledgerstream."))
    if args.topic:
        topics = args.topic
    elif consumer is not None:
        topics = catalog.inputs_of(consumer.name)
    else:
        raise LedgerstreamError(f"group {group} is not a catalog consumer's: name its topics with --topic")
    settings = settings_or_error()
    return OffsetPlanner(settings, codec_from_settings(settings), group, topics), settings


def _money(money: dict[str, Any]) -> str:
    return ", ".join(f"{currency} {amount:,}" for currency, amount in sorted(money.items())) or "-"


def offsets_show(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ops.offsets import members

    planner, _ = _offsets_planner(args)
    try:
        plans = planner.show(args.partition)
        state, count = members(planner.admin, planner.group)
    finally:
        planner.close()
    table = Table(
        "topic",
        "partition",
        "committed",
        "first",
        "end",
        "lag",
        title=f"{planner.group}: {state}, {count} members",
        title_justify="left",
    )
    for p in plans:
        lag = p.high - p.current if p.current >= 0 else p.high - p.low
        table.add_row(
            p.topic,
            str(p.partition),
            str(p.current) if p.current >= 0 else "none",
            str(p.low),
            str(p.high),
            str(lag),
        )
    out.print(table)
    return 0


def offsets_reset(args: argparse.Namespace) -> int:
    import csv

    import psycopg
    from rich.table import Table

    from ops.dead_letters import log_operation, operator_name
    from ops.offsets import Target, parse_duration
    from ops.topic_reader import parse_time

    if args.execute and not (args.reason or "").strip():
        err.print("offsets reset: --execute needs --reason (it is recorded in the operations log)")
        return 2
    chosen = [
        k
        for k in ("to_earliest", "to_latest", "to_offset", "to_datetime", "by_duration", "shift_by")
        if getattr(args, k) not in (None, False)
    ]
    if len(chosen) != 1:
        err.print(
            "offsets reset: give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime, "
            "--by-duration, --shift-by"
        )
        return 2
    kind = chosen[0]
    target = {
        "to_earliest": lambda: Target("earliest"),
        "to_latest": lambda: Target("latest"),
        "to_offset": lambda: Target("offset", args.to_offset),
        "to_datetime": lambda: Target("time", parse_time(args.to_datetime)),
        "by_duration": lambda: Target("duration", parse_duration(args.by_duration)),
        "shift_by": lambda: Target("shift", args.shift_by),
    }[kind]()
    planner, settings = _offsets_planner(args)
    try:
        plans = planner.plan(target, args.partition, count_money=not args.no_money)
        table = Table(
            "topic",
            "partition",
            "current",
            "target",
            "move",
            "events",
            "money",
            "note",
            title=f"reset of {planner.group} ({'EXECUTE' if args.execute else 'dry run'})",
            title_justify="left",
        )
        for p in plans:
            note = "; ".join(
                x for x in (p.clamped, f"{p.undecodable} undecodable" if p.undecodable else "") if x
            )
            table.add_row(
                p.topic,
                str(p.partition),
                str(p.current) if p.current >= 0 else "none",
                str(p.target),
                p.direction,
                str(p.events),
                _money(p.money),
                note,
            )
        out.print(table)
        for p in plans:
            if p.clamped:
                err.print(f"warning: {p.topic}/{p.partition}: {p.clamped}", markup=False)
        back = sum(p.events for p in plans if p.direction == "reprocess")
        ahead = sum(p.events for p in plans if p.direction == "skip")
        out.print(f"{back} events would be reprocessed, {ahead} skipped")
        if args.export:
            with open(args.export, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(
                    ["group", "topic", "partition", "current", "target", "move", "events", "money"]
                )
                for p in plans:
                    writer.writerow(
                        [
                            planner.group,
                            p.topic,
                            p.partition,
                            p.current,
                            p.target,
                            p.direction,
                            p.events,
                            _money(p.money),
                        ]
                    )
            err.print(f"plan written to {args.export}")
        if not args.execute:
            err.print("dry run: nothing changed (--execute --reason TEXT applies it)")
            return 0
        planner.apply(plans)
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            operation = log_operation(
                conn,
                operator=operator_name(settings),
                action="offsets.reset",
                target=planner.group,
                reason=args.reason,
                detail={
                    "target": kind,
                    "partitions": [
                        {
                            "topic": p.topic,
                            "partition": p.partition,
                            "before": p.current,
                            "after": p.target,
                            "events": p.events,
                            "money": {c: str(m) for c, m in p.money.items()},
                        }
                        for p in plans
                    ],
                },
            )
        out.print(f"offsets reset: {planner.group} moved (operation {operation})")
        return 0
    finally:
        planner.close()


def status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ops.pipeline_status import pipeline_status
    from topics.catalog import load_catalog

    with err.status("asking the broker"):
        found = pipeline_status(settings_or_error(), load_catalog())
    groups = Table(
        "consumer",
        "state",
        "members",
        "lag",
        "partitions behind",
        "dead letters",
        title="consumer groups",
        title_justify="left",
    )
    for g in found.groups:
        behind = sum(1 for n in g.lag.values() if n > 0)
        groups.add_row(
            g.consumer,
            g.state,
            str(g.members),
            f"{g.total_lag:,}",
            f"{behind}/{len(g.lag)}",
            f"[red]{g.dead_letters:,}[/red]" if g.dead_letters else "0",
        )
    out.print(groups)
    if args.partitions:
        lag = Table(
            "consumer",
            "topic",
            "partition",
            "lag",
            title="lag per partition (partitions behind)",
            title_justify="left",
        )
        for g in found.groups:
            for (topic, partition), n in sorted(g.lag.items()):
                if n > 0:
                    lag.add_row(g.consumer, topic, str(partition), f"{n:,}")
        out.print(lag)
    topics = Table("topic", "messages", "last event", "framing", title="topics", title_justify="left")
    for t in found.topics:
        framing = ", ".join(sorted(t.framings - {"none"})) or "-"
        topics.add_row(
            t.topic,
            f"{t.messages:,}",
            _when(t.last_ms) if t.last_ms is not None else "-",
            f"[red]MIXED: {framing}[/red]" if t.mixed else framing,
        )
    out.print(topics)
    mixed = [t.topic for t in found.topics if t.mixed]
    if mixed:
        err.print(
            f"status: {len(mixed)} topics hold both framings (registry and single-object); a registry-based "
            f"consumer fails on the single-object ones: {', '.join(mixed)}",
            markup=False,
        )
    return 1 if mixed else 0


def replay(args: argparse.Namespace) -> int:
    import psycopg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from ops.dead_letters import log_operation, operator_name
    from ops.replay import run_replay
    from ops.topic_reader import Start, TopicReader, parse_time
    from sinks.registry import SINKS
    from topics.codec import codec_from_settings

    if not args.dry_run and not (args.reason or "").strip():
        err.print("replay: --reason is required (it is recorded in the operations log), or use --dry-run")
        return 2
    sink = None
    reads = args.as_topic or args.topic
    if args.into_sink is not None:
        sink = SINKS[args.into_sink]()
        if reads not in sink.topics and "*" not in sink.topics:
            raise LedgerstreamError(f"sink {args.into_sink} reads {', '.join(sink.topics)}, not {reads}")
    elif args.to_topic == args.topic:
        raise LedgerstreamError(
            "--to-topic must differ from --topic (the groups reading it would see it twice)"
        )
    start = (
        Start("offset", args.from_offset)
        if args.from_offset is not None
        else Start("time", parse_time(args.from_time))
    )
    settings = settings_or_error()
    codec = codec_from_settings(settings)
    until = parse_time(args.to_time) if args.to_time else None
    columns = (
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.speed} msg/s"),
        TimeRemainingColumn(),
    )
    with (
        TopicReader(settings, args.topic, start, partitions=args.partition) as reader,
        Progress(*columns, console=err, transient=True) as bar,
    ):
        task = bar.add_task("replay", total=reader.pending())
        result = run_replay(
            settings,
            codec,
            reader,
            account=args.account,
            until_ms=until,
            to_offset=args.to_offset,
            sink=sink,
            target=args.to_topic,
            dry_run=args.dry_run,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    codec.close()
    where = f"sink {args.into_sink}" if sink is not None else f"topic {args.to_topic}"
    out.print(
        f"replay{' (dry run)' if args.dry_run else ''}: {result.replayed} of {result.read} events read "
        f"from {args.topic} into {where} in {result.seconds:.1f}s, {len(result.refused)} refused"
    )
    for line in result.refused[:10]:
        err.print(f"  refused {line}", markup=False)
    if sink is not None:
        table = Table("table", "inserted", "updated", "deleted", title="rows changed", title_justify="left")
        for name, (inserted, updated, deleted) in sorted(result.changes.items()):
            table.add_row(name, str(inserted), str(updated), str(deleted))
        out.print(table)
        out.print(
            f"{result.rows_changed} rows changed" + (" (a pure replay)" if not result.rows_changed else "")
        )
    if not args.dry_run:
        with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
            operation = log_operation(
                conn,
                operator=operator_name(settings),
                action="replay",
                target=args.topic,
                reason=args.reason,
                detail={
                    "into": where,
                    "partitions": args.partition,
                    "account": args.account,
                    "from": args.from_offset if args.from_offset is not None else args.from_time,
                    "to": args.to_offset if args.to_offset is not None else args.to_time,
                    "read": result.read,
                    "replayed": result.replayed,
                    "refused": len(result.refused),
                    "changes": result.changes,
                },
            )
        out.print(f"recorded as operation {operation}")
    return 0
