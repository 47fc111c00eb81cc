"""Serving an ASGI app with a real uvicorn server on a free loopback port, in a thread:
for the demo and the tests, which drive the connectors over real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ops.stack.process import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Any, timeout: float = 30.0, **config: Any) -> Iterator[str]:
    """The app at http://127.0.0.1:<port>, started and stopped around the block."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        if (
            not wait_until(lambda: server.started or not thread.is_alive(), timeout, 0.05)
            or not server.started
        ):
            raise RuntimeError(f"the server on port {port} did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
