"""`ledgerstream tail` and `export`: the topics as JSON lines or tables, in either framing, for analysts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ops.console import Parser, err, positive_int, settings_or_error, stop_on_signals
from topics.masking import conceal


def _filter(text: str) -> tuple[str, str]:
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FIELD=VALUE (a dotted path, e.g. amount.currency=EUR)"
        )
    return path.strip(), value


def _matches(record: Any, filters: list[tuple[str, str]]) -> bool:
    from ops.topic_reader import field_of, jsonable

    for path, wanted in filters:
        value = jsonable(field_of(record, path))
        if (value if isinstance(value, str) else json.dumps(value)) != wanted:
            return False
    return True


def tail(args: argparse.Namespace) -> int:
    from ops.dead_letters import dead_letter
    from ops.topic_reader import TopicReader, message_json, parse_start
    from topics.catalog import load_catalog
    from topics.codec import DecodeError, codec_from_settings

    catalog = load_catalog()
    spec = catalog.topics.get(args.topic)
    dead_letters = spec is not None and spec.dlq_of is not None
    settings = settings_or_error()
    # an analyst's principal reads the catalog's topics but the dead letters; the operator the rest
    reader_settings = settings if dead_letters or spec is None else settings.as_principal("analyst")
    prefix = "ledgerstream.analyst" if reader_settings is not settings else "ledgerstream.operator"
    codec = codec_from_settings(settings)
    start = parse_start(args.offset)
    stop = stop_on_signals()
    shown = 0
    with TopicReader(
        reader_settings, args.topic, start, partitions=args.partition, group_prefix=prefix
    ) as reader:
        if not args.follow:
            err.print(f"tail: {reader.pending()} messages in range on {len(reader.partitions)} partitions")
        for msg in reader.messages(follow=args.follow, stop=stop):
            key = msg.key()
            if args.key is not None and (key is None or key.decode(errors="replace") != args.key):
                continue
            if dead_letters:
                line = message_json(msg, dead_letter(msg).summary())
                if args.filter and not _matches(line["value"], args.filter):
                    continue
            else:
                try:
                    record = codec.decode(
                        msg.value() or b"", topic=args.topic, partition=msg.partition(), offset=msg.offset()
                    )
                except DecodeError as e:
                    if args.filter:
                        continue
                    line = message_json(msg, None, error=str(e))
                else:
                    record = conceal(record)  # account numbers to their last four, PANs redacted
                    if args.filter and not _matches(record, args.filter):
                        continue
                    line = message_json(msg, record)
            sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
            shown += 1
            if args.count is not None and shown >= args.count:
                break
        sys.stdout.flush()
    codec.close()
    return 0


def add_data_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register `tail` and `export` on the top-level subparsers."""
    tl: Parser = command(
        sub,
        "tail",
        tail,
        "print a topic's events as JSON lines, decoded from either framing (registry or single-object)",
    )
    tl.add_argument("topic", help="the topic, e.g. payments.transfer.requested.v1")
    tl.add_argument(
        "-o",
        "--offset",
        default="-10",
        help="where to start on each partition: beginning, end, -N (N before the end), an offset, or "
        "@TIME (ISO 8601 or epoch ms) (default -10: the last ten of each partition)",
    )
    tl.add_argument("-p", "--partition", type=int, action="append", help="only this partition (repeatable)")
    tl.add_argument("-k", "--key", help="only messages with this key (an account id on money topics)")
    tl.add_argument(
        "--filter",
        type=_filter,
        action="append",
        metavar="FIELD=VALUE",
        help="only events whose field (a dotted path) has this value, e.g. amount.currency=EUR (repeatable)",
    )
    tl.add_argument("-f", "--follow", action="store_true", help="keep printing new events until Ctrl-C")
    tl.add_argument("-c", "--count", type=positive_int, help="stop after this many lines")
    ex: Parser = command(
        sub, "export", export, "write a topic's events of a time range to Parquet or CSV, money exact"
    )
    ex.add_argument("topic", help="the topic, e.g. ledger.journal.posted.v1")
    ex.add_argument(
        "--from-time", help="the first event at or after this time (ISO 8601 or epoch ms; default: all)"
    )
    ex.add_argument("--to-time", help="events before this time only (default: up to now)")
    ex.add_argument("-p", "--partition", type=int, action="append", help="only this partition (repeatable)")
    ex.add_argument("--format", choices=["parquet", "csv"], help="default: from --out's suffix, else parquet")
    ex.add_argument("--out", required=True, help="the file to write")


def export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ops.export import topic_table, write
    from ops.topic_reader import Start, parse_time
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    catalog = load_catalog()
    spec = catalog.topics.get(args.topic)
    if spec is not None and spec.dlq_of is not None:
        err.print("export: dead letters stay sealed; `ledgerstream dlq show` opens them for an operator")
        return 2
    form = args.format or ("csv" if args.out.endswith(".csv") else "parquet")
    settings = settings_or_error()
    reader = settings if spec is None else settings.as_principal("analyst")
    prefix = "ledgerstream.analyst" if reader is not settings else "ledgerstream.operator"
    start = Start("time", parse_time(args.from_time)) if args.from_time else Start("beginning")
    until = parse_time(args.to_time) if args.to_time else None
    codec = codec_from_settings(settings)
    columns = (
        TextColumn("export"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.speed} msg/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("export", total=None)
        table, notes = topic_table(
            reader,
            codec,
            args.topic,
            start=start,
            until_ms=until,
            partitions=args.partition,
            group_prefix=prefix,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    codec.close()
    write(table, Path(args.out), form)
    for note in notes:
        err.print(f"export: {note}", markup=False)
    err.print(
        f"export: {table.num_rows} events, {table.num_columns} columns to {args.out} ({form})", markup=False
    )
    return 0
