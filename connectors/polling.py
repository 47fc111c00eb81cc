"""The loop of a connector that works PostgreSQL rows in steps: step until stopped or idle."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from topics.health import LoopProbe
from topics.settings import Settings


def step_until_idle(
    settings: Settings,
    step: Callable[[psycopg.Connection[Any]], int],
    *,
    stop: threading.Event | None,
    poll: float,
    idle_exit: float | None,
    probe: LoopProbe | None = None,
) -> None:
    """Run `step` (how much it did) on one autocommit connection until `stop` is set, waiting
    `poll` seconds after a step that did nothing, or until `idle_exit` seconds pass idle. Each
    step that returns is a turn of `probe` (an error ends the loop, and the process)."""
    stop = stop or threading.Event()
    idle_since = time.monotonic()
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        while not stop.is_set():
            did = step(conn)
            if probe is not None:
                probe.turned(True)
            if did:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            else:
                stop.wait(poll)
