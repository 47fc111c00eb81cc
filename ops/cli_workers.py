"""`ledgerstream sink | agent`: one sink or one agent, its own consumer group, until interrupted."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ops.console import (
    component_settings,
    err,
    port_arg,
    positive_int,
    seconds_arg,
    serve_health,
    settings_or_error,
    stop_on_signals,
    topic_pair,
)

if TYPE_CHECKING:
    from topics.runtime import BatchStats


def sink(args: argparse.Namespace) -> int:
    from sinks.base import SinkRunner
    from sinks.registry import SINKS
    from topics.codec import codec_from_settings
    from topics.collector import settle_collector

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
    if runner.fast_rows:
        err.print(
            f"sink {args.name}: rows of {', '.join(runner.fast_rows)} written natively (ledgerstream_native)"
        )
    health = serve_health(args.metrics_port, runner)
    settle_collector()
    try:
        stats = runner.run(stop=stop, idle_exit=args.idle_exit)
    finally:
        if health is not None:
            health.close()
    if args.json:
        _print_json(stats)
    err.print(
        f"sink {args.name}: {stats.written} written, {stats.dead_lettered} dead-lettered, "
        f"{stats.batches} batches, {stats.retries} retries in {stats.seconds:.1f}s"
    )
    return 0


def _print_json(stats: BatchStats) -> None:
    """The run's figures and this process's peak RSS, as one JSON line on stdout (for `bench`)."""
    import json

    from ops.process_stats import peak_rss_kb

    fields = (
        "consumed",
        "emitted",
        "written",
        "dead_lettered",
        "fast",
        "batches",
        "retries",
        "seconds",
        "busy_seconds",
        "first_at",
        "last_at",
        "db_seconds",
    )
    print(json.dumps({**{f: getattr(stats, f) for f in fields}, "peak_rss_kb": peak_rss_kb()}))


def agent(args: argparse.Namespace) -> int:
    from streams.registry import AGENTS
    from streams.runtime import AgentRuntime, run_agent
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings
    from topics.collector import settle_collector

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
    settle_collector()
    try:
        stats = run_agent(runtime, stop=stop, idle_exit=args.idle_exit)
    finally:
        if health is not None:
            health.close()
    if args.json:
        _print_json(stats)
    err.print(
        f"agent {args.name}: {stats.consumed} consumed, {stats.emitted} emitted, "
        f"{stats.dead_lettered} dead-lettered in {stats.batches} batches"
    )
    return 0


def add_worker_commands(sub: Any, command: Callable[..., Any]) -> None:
    """Register these commands on the top-level subparsers."""
    from sinks.base import DEFAULT_BATCH_SIZE as SINK_BATCH_SIZE
    from sinks.registry import SINKS

    sk = command(sub, "sink", sink, "run one sink (its own consumer group) until interrupted")
    sk.add_argument("name", choices=sorted(SINKS), help="which sink")
    sk.add_argument(
        "--batch-size",
        type=positive_int,
        default=SINK_BATCH_SIZE,
        help=f"most events per transaction (default {SINK_BATCH_SIZE})",
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
    from topics.runtime import DEFAULT_BATCH_SIZE

    ag = command(sub, "agent", agent, "run one agent (a Faust agent fed batches; its own consumer group)")
    ag.add_argument("name", choices=sorted(AGENTS), help="which agent")
    ag.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"most events per batch (default {DEFAULT_BATCH_SIZE})",
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
    ag.add_argument("--json", action="store_true", help="print the run's figures as one JSON line on stdout")
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
