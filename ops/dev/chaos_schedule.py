"""The chaos scenarios: the fault schedule each draws from a seed (`ledgerstream chaos`).

A scenario's draw is a pure function of the seed, the window and the worker names: the same
seed draws the same schedule, so a failing seed replays.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from topics.faults import FAULT_ENV, POINTS

SESSION_SECONDS = 10.0
"""The consumers' session timeout (`topics.consuming`): a zombie is stopped for longer."""
MAX_POLL_SECONDS = 300.0

POISONS = range(6)
"""Five kinds of hostile bytes (each dead-lettered by both readers) and an inverted quote (by one)."""


@dataclass(frozen=True)
class Action:
    """One step of a fault schedule: at `at` seconds into the window, do `kind` to `target`."""

    at: float
    kind: str
    target: str = ""

    def __str__(self) -> str:
        return f"{self.at:6.1f}s {self.kind} {self.target}".rstrip()


@dataclass
class Draw:
    """What a scenario drew from the seed: its schedule, and how its workers run."""

    actions: list[Action] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    """Consumers that run two workers (a zombie's replacement, a rebalance storm's second)."""
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Worker name -> its extra environment (fault points)."""
    poison: int = 0
    """Deliberately bad events the schedule injects (each dead-lettered by every reader)."""


@dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    summary: str
    draw: Callable[[random.Random, float, list[str]], Draw]


def _every(rng: random.Random, window: float, low: float, high: float, first: float = 5.0) -> list[float]:
    times, t = [], rng.uniform(first, first + low)
    while t < window - 3:
        times.append(t)
        t += rng.uniform(low, high)
    return times or [min(first, window / 2)]


def _kill_workers(rng: random.Random, window: float, workers: list[str]) -> Draw:
    return Draw([Action(t, "kill", rng.choice(workers)) for t in _every(rng, window, 10, 30)])


def _crash_points(rng: random.Random, window: float, workers: list[str]) -> Draw:
    consumers = [w for w in workers if w.endswith(("_agent", "_sink"))]
    chosen = rng.sample(consumers, 4)
    env = {name: {FAULT_ENV: f"{POINTS[i % 2]}@{rng.randint(2, 6)}"} for i, name in enumerate(chosen)}
    return Draw([Action(window, "disarm", ",".join(chosen))], env=env)


def _zombie(rng: random.Random, window: float, workers: list[str]) -> Draw:
    group = rng.choice(["ledger_sink", "status_agent", "fees_agent", "ledger_agent", "audit_sink"])
    at = rng.uniform(5, max(6.0, window / 3))
    stopped = SESSION_SECONDS + rng.uniform(5, 15)
    victim = f"{group}-{rng.randint(0, 1)}"
    return Draw([Action(at, "sigstop", victim), Action(at + stopped, "sigcont", victim)], doubled=[group])


def _rebalance_storm(rng: random.Random, window: float, workers: list[str]) -> Draw:
    groups = rng.sample(
        ["ledger_sink", "status_agent", "fees_agent", "ledger_agent", "audit_sink", "aml_agent"], 3
    )
    actions = []
    t, up = 5.0, True
    while t < window - 3:
        actions += [Action(t, "stop" if up else "start", f"{g}-1") for g in groups]
        t, up = t + 5, not up
    if not up:  # leave every second worker running again
        actions += [Action(t, "start", f"{g}-1") for g in groups]
    return Draw(actions, doubled=groups)


def _service_outage(
    service: str, low: float, high: float
) -> Callable[[random.Random, float, list[str]], Draw]:
    def draw(rng: random.Random, window: float, workers: list[str]) -> Draw:
        at = rng.uniform(5, max(6.0, window / 3))
        down = rng.uniform(low, high)
        return Draw([Action(at, "service-kill", service), Action(at + down, "service-start", service)])

    return draw


def _postgres(rng: random.Random, window: float, workers: list[str]) -> Draw:
    draw = _service_outage("postgres", 3, 10)(rng, window, workers)
    after = draw.actions[-1].at + rng.uniform(5, 10)
    # past max.poll.interval.ms when the window allows it; a short run stalls for a third of it
    stall = MAX_POLL_SECONDS + 15 if window >= MAX_POLL_SECONDS + 60 else max(10.0, window / 3)
    draw.actions += [
        Action(after, "service-sigstop", "postgres"),
        Action(after + stall, "service-sigcont", "postgres"),
    ]
    return draw


def _redis(rng: random.Random, window: float, workers: list[str]) -> Draw:
    at = rng.uniform(5, max(6.0, window / 4))
    down = rng.uniform(2, 8)
    stall_at = at + down + rng.uniform(5, 10)
    stall = rng.uniform(10, 20)
    return Draw(
        [
            Action(at, "service-kill", "redis"),
            Action(at, "redis-wipe", "redis"),
            Action(at + down, "service-start", "redis"),
            Action(stall_at, "service-sigstop", "redis"),
            Action(stall_at + stall, "service-sigcont", "redis"),
        ]
    )


def _replay(rng: random.Random, window: float, workers: list[str]) -> Draw:
    partition = str(rng.randrange(1 << 16))  # modulo the topic's partitions
    return Draw([Action(rng.uniform(window / 3, window * 2 / 3), "replay", partition)])


def _poison(rng: random.Random, window: float, workers: list[str]) -> Draw:
    actions = [
        Action(t, "poison", str(rng.randrange(len(POISONS)))) for t in _every(rng, window, 3, 8, first=2)
    ]
    return Draw(actions, poison=len(actions))


def _webhook_storm(rng: random.Random, window: float, workers: list[str]) -> Draw:
    actions = [Action(t, "storm") for t in _every(rng, window, 3, 8, first=2)]
    return Draw(actions)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(1, "kill-worker", "kill -9 a random worker every 10-30 s", _kill_workers),
        Scenario(
            2,
            "crash-points",
            "workers crash after their database commit or before their flush",
            _crash_points,
        ),
        Scenario(3, "zombie", "a worker SIGSTOPped past its session timeout, then resumed", _zombie),
        Scenario(
            4,
            "rebalance-storm",
            "a second worker of three groups stopped and started every 5 s",
            _rebalance_storm,
        ),
        Scenario(
            5,
            "broker-kill",
            "kill -9 of the broker during produce, restarted 10-30 s later",
            _service_outage("kafka", 10, 30),
        ),
        Scenario(6, "postgres", "kill -9 of PostgreSQL, then a SIGSTOP stall", _postgres),
        Scenario(7, "redis", "Redis killed and its data lost, then stalled", _redis),
        Scenario(
            8, "replay", "an operator replays the ledger journal topic into its sink under traffic", _replay
        ),
        Scenario(
            9, "poison", "hostile Avro and valid Avro with bad business data mixed into the stream", _poison
        ),
        Scenario(
            10,
            "webhook-storm",
            "one signed delivery 10 times at once, with forged ones mixed in",
            _webhook_storm,
        ),
    )
}
