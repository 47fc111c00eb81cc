"""`bench agent` for the agents that keep state: each run on fresh scratch state, removed afterwards."""

from __future__ import annotations

import psycopg
import pytest
import redis

from ops.dev.bench_agent import REDIS_CLAIM, bench_agent, scratch_redis
from topics.catalog import Catalog
from topics.settings import Settings


def _bench_databases(settings: Settings) -> set[str]:
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ledgerstream_bench%'")
        return {name for (name,) in rows.fetchall()}


def _claimed(settings: Settings) -> list[int]:
    claimed = []
    for number in range(1, 16):
        client = redis.Redis.from_url(settings.redis_url, db=number)
        try:
            if client.exists(REDIS_CLAIM):
                claimed.append(number)
        finally:
            client.close()
    return claimed


@pytest.mark.parametrize(("agent", "outputs"), [("status", 240 * 3), ("aml", 0), ("fx", 240)])
def test_a_stateful_agent_is_measured_on_scratch_state(
    services: Settings, catalog: Catalog, agent: str, outputs: int
) -> None:
    databases = _bench_databases(services)
    result = bench_agent(services, catalog, agent, events=240, batch_size=100, accounts=20)
    assert (result.events, result.accounts) == (240, 20)
    assert result.dead_lettered == 0
    assert result.outputs >= outputs  # status: created, validating, then reserved or failed; fx: a conversion
    assert result.runtime_per_s > 0 and result.minimal_per_s > 0
    assert _bench_databases(services) == databases
    assert _claimed(services) == []


def test_a_scratch_redis_database_is_one_nobody_uses(services: Settings) -> None:
    with scratch_redis(services.redis_url) as first, scratch_redis(services.redis_url) as second:
        assert first != second
        client = redis.Redis.from_url(first)
        try:
            client.set("left-behind", "1")
        finally:
            client.close()
    client = redis.Redis.from_url(first)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_two_agent_processes_in_one_group_drain_the_topic_between_them(
    services: Settings, catalog: Catalog
) -> None:
    result = bench_agent(services, catalog, "fees", events=600, batch_size=100, accounts=40, workers=2)
    assert result.workers == 2 and result.dead_lettered == 0
    assert result.group_per_s > 0 and result.group_seconds > 0  # every event consumed, or it raises
    assert result.group_peak_rss_mb > 0
    assert any("2 agent processes, one group" in line for line in result.lines())
