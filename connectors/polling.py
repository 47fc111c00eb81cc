"""The loop of a connector that works PostgreSQL rows in steps: step until stopped or idle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from topics.health import LoopProbe
from topics.settings import Settings

log = logging.getLogger(__name__)


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
    step is a turn of `probe`.

    A database that cannot be reached (refused, restarting, a connection cut mid-step) is
    waited for: the connection is dropped and made again with a growing delay (0.2 s, doubled,
    at most 10 s), the probe says not ready meanwhile, and the loop goes on once it answers. A
    step works in transactions that are safe to do again, so one cut midway is simply done
    again. Any other error ends the loop, and the process."""
    stop = stop or threading.Event()
    idle_since = time.monotonic()
    delay = 0.2
    conn: psycopg.Connection[Any] | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        settings.database_url.get_secret_value(), autocommit=True, connect_timeout=5
                    )
                did = step(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if probe is not None:
                    probe.turned(False, str(e).strip()[:200])
                log.warning("database unavailable (%s); retrying in %.1fs", str(e).strip(), delay)
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(delay)
                delay = min(2 * delay, 10.0)
                continue
            delay = 0.2
            if probe is not None:
                probe.turned(True)
            if did:
                idle_since = time.monotonic()
            elif idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            else:
                stop.wait(poll)
    finally:
        if conn is not None:
            conn.close()
