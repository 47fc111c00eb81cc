"""Runs an agent: its handler hosted by a Faust agent, fed batches by the one batch runtime.

`topics.runtime.BatchRuntime` consumes, decodes, dead-letters, pauses while a dependency
is down, produces the outputs and commits (the same loop the sinks use). An agent's part
is `AgentWork`: each batch is put on the Faust agent's channel, on an event loop of its
own thread, and the Faust agent runs the handler's logic in an executor thread (blocking
PostgreSQL calls do not stall the loop). Faust's per-event fetch and dispatch path caps an
agent near 2.8k events/s on this machine class, so it receives whole batches.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import faust
import psycopg
import redis

from streams.base import AgentError, BatchHandler, Refused, Result
from topics.catalog import Catalog
from topics.codec import AvroCodec
from topics.events import Event
from topics.runtime import DEFAULT_BATCH_SIZE, BatchRuntime, BatchStats, Outcome
from topics.settings import Settings

TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def make_app(name: str, settings: Settings) -> faust.App:
    """The Faust app that hosts one agent (no web server, no tables, no RocksDB)."""
    return faust.App(
        f"ledgerstream-{name}",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        web_enabled=False,
        store="memory://",
        autodiscover=False,
    )


class FaustHost:
    """A Faust agent on an event loop of its own thread; `call` hands it a batch and waits."""

    def __init__(self, name: str, settings: Settings, handle: Callable[[list[Event]], Result]) -> None:
        self.name, self.handle = name, handle
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-faust", daemon=True)
        self._thread.start()
        self._app, self._channel, self._agent = asyncio.run_coroutine_threadsafe(
            self._start(settings), self._loop
        ).result(30)

    async def _start(self, settings: Settings) -> tuple[faust.App, Any, Any]:
        # built on the running loop: a Faust app made outside one creates a loop of its own
        app = make_app(self.name, settings)
        channel = app.channel()
        loop = asyncio.get_running_loop()

        async def agent(batches: Any) -> None:
            async for events, done in batches:
                try:
                    done.set_result(await loop.run_in_executor(None, self.handle, events))
                except Exception as e:  # handed back to the runtime, which retries or stops
                    done.set_exception(e)

        started = app.agent(channel, name=self.name)(agent)
        app.flow_control.resume()
        await started.start()
        return app, channel, started

    def call(self, events: list[Event]) -> Result:
        async def submit() -> Result:
            done: asyncio.Future[Result] = self._loop.create_future()
            await self._channel.put((events, done))
            return await done

        return asyncio.run_coroutine_threadsafe(submit(), self._loop).result()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._agent.stop(), self._loop).result(30)
        _close_idle_consumer_loop(self._app)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def _close_idle_consumer_loop(app: faust.App) -> None:
    """A Faust stream reaches for `app.consumer`, whose aiokafka consumer thread makes an
    event loop at construction. Batches come from confluent-kafka here, so that thread
    never starts; close its loop instead of leaking it."""
    thread = getattr(getattr(app, "_consumer", None), "_thread", None)
    loop = getattr(thread, "thread_loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()


class AgentWork:
    """An agent's part of a batch: its handler's outputs and refusals."""

    transient: tuple[type[BaseException], ...] = TRANSIENT
    overlap = 1
    """A handler decides a batch on what the batch before it left (holds, parked reports, counters)."""

    def __init__(self, settings: Settings, handler: BatchHandler) -> None:
        self.handler = handler
        self.name, self.topics = handler.name, handler.topics
        self._host: FaustHost | None = None
        self._settings = settings

    def prepare(self, events: list[Event]) -> list[Any]:
        return [None] * len(events)  # a handler's work is all in `handle`

    def start(self) -> None:
        if self._host is None:
            self._host = FaustHost(self.name, self._settings, self.handler.handle)

    def work(self, events: list[Event], prepared: list[Any]) -> Outcome:
        self.start()
        assert self._host is not None
        result = self._host.call(events)
        undeclared = {o.topic for o in result.outputs} - set(self.handler.outputs)
        if undeclared:
            raise AgentError(
                f"{self.name} emitted to {sorted(undeclared)}, which are not its catalog outputs"
            )
        return Outcome(
            outputs=[(o.topic, o.record) for o in result.outputs],
            refused=[(event, Refused(reason)) for event, reason in result.refused],
        )

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None
        self.handler.close()


class AgentRuntime(BatchRuntime):
    """Hosts `handler` as a Faust agent fed by the batch runtime.

    Args:
        settings: connections, the environment this process serves, and its Kafka principal.
        handler: the agent's logic.
        codec: decodes inputs and encodes outputs.
        catalog: output keys.
        batch_size: most messages per batch.
        linger: the longest one poll waits for events (what arrived then goes to an idle worker).
        group_id: overrides `ledgerstream.<name>` (a new group replays from the start).
        topics: overrides the handler's input topics.
        consumer_config: extra librdkafka consumer settings.
        output_topics: writes an output topic's events to another topic (a scratch copy).
        input_aliases: reads a topic as the catalog topic it stands for (a scratch copy).
    """

    def __init__(
        self,
        settings: Settings,
        handler: BatchHandler,
        codec: AvroCodec,
        catalog: Catalog,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        linger: float = 0.01,
        group_id: str | None = None,
        topics: list[str] | None = None,
        consumer_config: dict[str, Any] | None = None,
        output_topics: dict[str, str] | None = None,
        input_aliases: dict[str, str] | None = None,
    ) -> None:
        self.handler = handler
        super().__init__(
            settings,
            AgentWork(settings, handler),
            codec,
            catalog,
            batch_size=batch_size,
            linger=linger,
            group_id=group_id,
            topics=topics,
            consumer_config=consumer_config,
            output_topics=output_topics,
            input_aliases=input_aliases,
        )


def run_agent(runtime: AgentRuntime, **kwargs: Any) -> BatchStats:
    """Run an agent runtime to completion (`stop`, `idle_exit`, `max_events` as `BatchRuntime.run`)."""
    return runtime.run(**kwargs)
