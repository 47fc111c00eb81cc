"""What every `ledgerstream` subcommand shares: the consoles, one-line argument errors,
settings read once, signal handling and argument types."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, NoReturn

from rich.console import Console

from topics.errors import LedgerstreamError
from topics.settings import Settings

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        err.print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", markup=False)
        raise SystemExit(2)


def settings_or_error() -> Settings:
    import os

    from pydantic import ValidationError

    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        raise LedgerstreamError(f"bad setting {first['loc'][0]}: {first['msg']}") from None
    # the local stack's owner password, for a shell that has not run `eval "$(ledgerstream stack env)"`
    # (libpq reads PGPASSFILE; the processes this one starts inherit it)
    passfile = settings.stack_dir / "postgres" / "pgpass"
    if "PGPASSFILE" not in os.environ and passfile.exists():
        os.environ["PGPASSFILE"] = str(passfile)
    return settings


def component_settings(name: str, *, group: str | None = None, topics: list[str] | None = None) -> Settings:
    """Settings under component `name`'s own Kafka principal (see `Settings.as_principal`).

    A group or topic the principal's ACLs would refuse is refused here, in one line,
    rather than by the broker once the consumer has started.
    """
    from topics.catalog import load_catalog

    settings = settings_or_error().as_principal(name)
    if settings.kafka_principal != name:
        return settings
    principal = load_catalog().principal(name)
    prefix = principal.group_prefix
    if group is not None and prefix is not None and not group.startswith(prefix):
        raise LedgerstreamError(f"group {group!r}: principal {name} may only use groups starting {prefix!r}")
    outside = [t for t in topics or [] if t not in principal.reads]
    if outside:
        raise LedgerstreamError(f"principal {name} may not read {', '.join(outside)} (not a catalog input)")
    return settings


def stop_on_signals() -> threading.Event:
    """An event SIGINT or SIGTERM sets, so a long-running command finishes its batch and stops."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def serve_health(port: int | None, runtime: Any) -> Any:
    """Start `/healthz`, `/readyz` and `/metrics` of a worker's runtime on `port` (None: none);
    returns the server to close, or None. A port in use is refused in one line."""
    if port is None:
        return None
    from topics.health import HealthServer

    try:
        server = HealthServer(port, runtime.live, runtime.ready)
    except OSError as e:
        raise LedgerstreamError(f"--metrics-port {port}: {e.strerror or e}") from None
    err.print(f"serving /healthz, /readyz and /metrics on port {server.port}")
    return server


def port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0 picks a free one)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def share(text: str) -> float:
    """A share from 0 to 1, e.g. 0.25."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not a share from 0 to 1")
    return value


def topic_pair(text: str) -> tuple[str, str]:
    """`A=B`: two topic names (a scratch copy and the catalog topic it stands for, or back)."""
    left, sep, right = text.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not TOPIC=TOPIC")
    return left.strip(), right.strip()


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value
