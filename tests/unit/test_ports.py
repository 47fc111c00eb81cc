"""Where the local stack and a supervised run listen: every port moves by one offset."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from topics.errors import ConfigError
from topics.ports import OFFSET_VARIABLE, port_offset
from topics.settings import REPO_ROOT


@pytest.mark.parametrize(("raw", "offset"), [("", 0), (" ", 0), ("0", 0), ("100", 100), ("10000", 10_000)])
def test_an_offset_is_read_from_the_environment(monkeypatch, raw, offset):
    monkeypatch.setenv(OFFSET_VARIABLE, raw)
    assert port_offset() == offset


@pytest.mark.parametrize("raw", ["abc", "-5", "1.5", "10001", "1e3"])
def test_an_offset_that_is_not_a_small_whole_number_is_refused(monkeypatch, raw):
    monkeypatch.setenv(OFFSET_VARIABLE, raw)
    with pytest.raises(ConfigError, match=OFFSET_VARIABLE):
        port_offset()


def _ports_under(offset: str) -> dict[str, object]:
    code = (
        "import json, topics.ports as p; print(json.dumps({k: getattr(p, k) for k in "
        "('KAFKA_PORT','KAFKA_CONTROLLER_PORT','POSTGRES_PORT','REDIS_PORT','REGISTRY_PORT',"
        "'METRICS_BASE','API_PORTS','WEBHOOK_PORTS')}))"
    )
    env = {**os.environ, OFFSET_VARIABLE: offset}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_every_port_moves_by_the_offset_together():
    base, moved = _ports_under("0"), _ports_under("100")

    def flat(ports: dict[str, object]) -> list[int]:
        return [p for v in ports.values() for p in (v if isinstance(v, list) else [v])]  # type: ignore[misc]

    assert [m - b for b, m in zip(flat(base), flat(moved), strict=True)] == [100] * len(flat(base))
    assert base["KAFKA_PORT"] == 19092 and base["API_PORTS"] == [18080, 18082]


def test_the_command_line_refuses_a_bad_offset_in_one_line():
    env = {**os.environ, OFFSET_VARIABLE: "abc"}
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"ledgerstream: error: {OFFSET_VARIABLE} must be a whole number from 0 to 10000, not 'abc'"
    ]


def test_the_settings_defaults_name_the_moved_stack():
    code = (
        "import os; [os.environ.pop(k, None) for k in ('KAFKA_BOOTSTRAP_SERVERS', 'DATABASE_URL', 'REDIS_URL')];"
        "from topics.settings import Settings; s = Settings();"
        "print(s.kafka_bootstrap_servers, s.database_url.get_secret_value(), s.redis_url)"
    )
    env = {**os.environ, OFFSET_VARIABLE: "100"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [
        "127.0.0.1:19192",
        "postgresql://ledgerstream@127.0.0.1:15532/ledgerstream",
        "redis://127.0.0.1:16479/0",
    ]
