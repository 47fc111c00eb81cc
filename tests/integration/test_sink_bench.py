"""`bench sink` with two sink processes in one group: the group's rate from its first message to
its last commit, against raw COPY of the same rows."""

from __future__ import annotations

from ops.dev.bench import bench_sink
from topics.settings import Settings


def test_two_sink_processes_are_measured_as_one_group(services: Settings) -> None:
    result = bench_sink(services, events=3000, batch_size=500, workers=2)
    assert result.workers == 2 and result.dead_lettered == 0
    assert result.copy_rows == 3000 and result.copy_per_s > 0
    assert 0 < result.sink_seconds < 120 and result.sink_per_s > 0
    assert result.fast >= 3000 - 2  # natively, but for the first value each process decodes
    assert any(line.strip().startswith("sink x2") for line in result.lines())
