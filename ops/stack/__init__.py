"""The local stack: `ledgerstream stack up | down | status | env`.

On a machine without a Docker engine the project installs and starts its own
services: Kafka in KRaft mode from Maven Central jars, PostgreSQL and Redis from
Debian packages, and Apicurio Registry (Confluent-compatible API) from Maven
Central. Everything lives under `.stack/` (data, logs, PID files) and `.cache/`
(downloads), both ignored by git.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ops.stack.process import wait_until
from ops.stack.services import Kafka, Postgres, Redis, Registry, Service, port_open
from topics.errors import StackError
from topics.ports import OFFSET, OFFSET_VARIABLE
from topics.settings import Settings

Say = Callable[[str], None]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int
    pid: int | None
    healthy: bool

    @property
    def state(self) -> str:
        if self.pid is None:
            return "stopped" if not self.healthy else "running (not started by this stack)"
        return "healthy" if self.healthy else "starting or unhealthy"


class Stack:
    """The set of services `up` starts and `down` stops, in start order."""

    def __init__(self, settings: Settings, *, registry: bool = True) -> None:
        args = (settings.stack_dir, settings.cache_dir)
        self.services: list[Service] = [Postgres(*args), Redis(*args), Kafka(*args)]
        self.registry = Registry(*args)
        if registry:
            self.services.append(self.registry)

    def up(self, say: Say = print) -> float:
        """Start every service that is not running and wait until each answers.

        Returns the seconds it took. Raises StackError naming the service that
        failed, with the last lines of its log.
        """
        started = time.monotonic()
        for service in self.services:
            if service.process.pid() is not None:
                say(f"{service.name}: already running (pid {service.process.pid()})")
                continue
            if port_open(service.port):
                raise StackError(
                    f"{service.name}: port {service.port} is taken by a process this stack did not start"
                )
            fetched = service.install()
            if fetched:
                say(f"{service.name}: fetched {fetched}")
            service.dir.mkdir(parents=True, exist_ok=True)
            service.launch()
            say(f"{service.name}: started (pid {service.process.pid()}), log {service.process.logfile}")
        for service in self.services:
            self._await(service, say)
        for service in self.services:
            service.after_ready()
        return time.monotonic() - started

    def _await(self, service: Service, say: Say) -> None:
        def answered() -> bool:
            if service.process.pid() is None:
                raise StackError(
                    f"{service.name}: process exited during start-up; last lines of "
                    f"{service.process.logfile}:\n{service.process.tail()}"
                )
            return service.healthy()

        if not wait_until(answered, service.ready_timeout, interval=0.25):
            raise StackError(
                f"{service.name}: not ready after {service.ready_timeout:.0f}s; last lines of "
                f"{service.process.logfile}:\n{service.process.tail()}"
            )
        say(f"{service.name}: ready on port {service.port}")

    def down(self, say: Say = print) -> None:
        """Stop, by PID, what `up` started (in reverse order)."""
        for service in reversed([*self.services, *self._registry_if_left_over()]):
            stopped = service.process.stop()
            say(f"{service.name}: {'stopped' if stopped else 'was not running'}")

    def _registry_if_left_over(self) -> list[Service]:
        if self.registry in self.services or self.registry.process.pid() is None:
            return []
        return [self.registry]

    def status(self) -> list[ServiceStatus]:
        services = [*self.services, *self._registry_if_left_over()]
        return [ServiceStatus(s.name, s.port, s.process.pid(), s.healthy()) for s in services]

    def exports(self) -> dict[str, str]:
        """Environment for clients of this stack; the registry only if it answers."""
        env: dict[str, str] = {}
        for service in self.services:
            if service is not self.registry:
                env.update(service.exports())
        env["SCHEMA_REGISTRY_URL"] = self.registry.url if self.registry.healthy() else ""
        if OFFSET:
            env[OFFSET_VARIABLE] = str(OFFSET)
        return env
