"""`ledgerstream chaos`: the pipeline as separate processes under a seeded fault schedule, then
its money invariants (I1-I5), one line per scenario and seed."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ops.console import Parser, err, out, positive_int, settings_or_error

SCENARIO_NAMES = (
    "kill-worker",
    "crash-points",
    "zombie",
    "rebalance-storm",
    "broker-kill",
    "postgres",
    "redis",
    "replay",
    "poison",
    "webhook-storm",
)
"""`ops.dev.chaos_schedule.SCENARIOS`, in their order (a wheel has no `ops.dev`; a test keeps both equal)."""


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(SCENARIO_NAMES)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown or not names:
        named = ", ".join(unknown) or repr(text)
        raise argparse.ArgumentTypeError(
            f"unknown scenario {named}: choose all or from {', '.join(SCENARIO_NAMES)}"
        )
    return names


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not 0.2 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{value} minutes: choose 0.2 to 60")
    return value


def chaos(args: argparse.Namespace) -> int:
    try:
        from ops.dev.chaos import run_chaos
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("ops.dev"):
            raise
        err.print("ledgerstream chaos: needs a checkout of the repository (ops.dev is not installed)")
        return 2
    from topics.catalog import load_catalog
    from topics.codec import codec_from_settings

    settings = settings_or_error()
    codec = codec_from_settings(settings)
    seeds = list(range(args.seed, args.seed + args.seeds))
    try:
        results = run_chaos(
            settings,
            codec,
            load_catalog(),
            args.scenario,
            seeds,
            transfers=args.events,
            minutes=args.minutes,
            say=lambda line: err.print(line, markup=False, highlight=False),
        )
    finally:
        codec.close()
    out.print("", markup=False)
    for result in results:
        out.print(result.line(), markup=False, highlight=False)
    failed = [r for r in results if not r.ok]
    if failed:
        replay = ", ".join(f"--scenario {r.scenario} --seed {r.seed}" for r in failed[:5])
        out.print(
            f"{len(failed)} of {len(results)} runs broke an invariant; replay with {replay}", markup=False
        )
        return 1
    out.print(f"all {len(results)} runs held every invariant", markup=False)
    return 0


def add_chaos_command(sub: Any, command: Callable[..., Any]) -> None:
    p: Parser = command(
        sub,
        "chaos",
        chaos,
        "run the pipeline as supervised processes under a seeded fault schedule and check that no money "
        "was lost or doubled (I1 no loss, I2 no duplicates, I3 money, I4 recovery, I5 dead letters)",
    )
    p.add_argument(
        "--scenario",
        type=_scenarios,
        required=True,
        help=f"all, or comma-separated: {', '.join(SCENARIO_NAMES)}",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the first seed: the same seed replays the same schedule (default 1)",
    )
    p.add_argument("--seeds", type=positive_int, default=1, help="how many seeds from --seed on (default 1)")
    p.add_argument(
        "--events",
        type=positive_int,
        default=300,
        help="transfers sent during the fault window (default 300)",
    )
    p.add_argument(
        "--minutes", type=_minutes, default=1.0, help="the fault window, in minutes (default 1; 0.2 to 60)"
    )
