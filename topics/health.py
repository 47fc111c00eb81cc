"""`/healthz`, `/readyz` and `/metrics` of one worker, on its own port.

Every agent and sink serves the three on `--metrics-port` (a daemon thread of the standard
library's threading HTTP server; Prometheus' own exposition for `/metrics`):
- `/healthz`: 200 while the worker's loop turns (it polled Kafka in the last
  `STALL_SECONDS`), else 503, so an orchestrator restarts a wedged process;
- `/readyz`: 200 while the group gave it partitions and no dependency is down, else 503,
  so a rollout waits for it and a load balancer or alert sees a paused worker;
- `/metrics`: the process's Prometheus registry (the runtime's `ledgerstream_consumer_*`,
  lag and committed offsets per partition, and the process collectors).

Both probes answer JSON with what they looked at.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Probe = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    """Serves a worker's probes and metrics until closed.

    Args:
        port: the port to listen on (0 picks a free one; `port` then says which).
        live: whether the process is alive, and what it looked at.
        ready: whether it is ready to work, and what it looked at.
        host: the address to bind (all interfaces by default: probes come from outside).
    """

    def __init__(self, port: int, live: Probe, ready: Probe, host: str = "0.0.0.0") -> None:
        probes = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                elif path in probes:
                    ok, detail = probes[path]()
                    body = json.dumps({"ok": ok, **detail}, default=str).encode()
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found: try /healthz, /readyz or /metrics\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the worker's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class LoopProbe:
    """The probes of a polling loop (a connector that is not a consumer group): alive while the
    loop turns, ready while its last turn succeeded.

    Args:
        name: the worker, as the probes' answers name it.
        stall_seconds: a loop that has not turned for this long is not alive.
    """

    def __init__(self, name: str, stall_seconds: float = 60.0) -> None:
        self.name, self.stall_seconds = name, stall_seconds
        self._turned = time.monotonic()
        self._ok = False
        self._error = ""

    def turned(self, ok: bool, error: str = "") -> None:
        """Record one turn of the loop and whether it succeeded (why not, when it did not)."""
        self._turned, self._ok, self._error = time.monotonic(), ok, error

    @property
    def ok(self) -> bool:
        """Whether the last turn succeeded."""
        return self._ok

    def live(self) -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - self._turned
        return since < self.stall_seconds, {"worker": self.name, "seconds_since_turn": round(since, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self._ok, {"worker": self.name, "last_turn_ok": self._ok, "error": self._error or None}
