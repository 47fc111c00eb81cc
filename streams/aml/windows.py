"""Sliding windows per account and currency in Redis, updated atomically by one Lua script.

Per account and currency, three keys: a sorted set of event ids scored by event
time (ms), a hash of each event's amount and direction, and a sorted set of
counterparties scored by when they were first seen. One script call adds the
event (ZADD NX: the member is the event id, so a redelivered event is never
counted twice), trims what fell out of the longest window, and returns the
window's events up to this event's time plus the counterparties' first-seen
times, in one round trip. Sums are taken in Python over exact integers (Lua's
numbers are doubles and would round wei). Windows are rebuilt by replaying the
partition: the scores are event times, not arrival times.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import redis

from streams.aml.rules import Direction, Movement

WINDOW = """
local events, amounts, parties = KEYS[1], KEYS[2], KEYS[3]
local member, at, value = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local horizon, party, ttl = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local added = redis.call('ZADD', events, 'NX', at, member)
if added == 1 then
  redis.call('HSET', amounts, member, value)
end
local cutoff = at - horizon
local old = redis.call('ZRANGEBYSCORE', events, '-inf', '(' .. cutoff)
for i = 1, #old, 500 do
  local chunk = {unpack(old, i, math.min(i + 499, #old))}
  redis.call('ZREM', events, unpack(chunk))
  redis.call('HDEL', amounts, unpack(chunk))
end
if party ~= '' then
  redis.call('ZADD', parties, 'NX', at, party)
end
redis.call('ZREMRANGEBYSCORE', parties, '-inf', '(' .. cutoff)
local inside = redis.call('ZRANGEBYSCORE', events, cutoff, at, 'WITHSCORES')
local values = {}
for i = 1, #inside, 2 do
  values[#values + 1] = redis.call('HGET', amounts, inside[i]) or ''
end
local firsts = redis.call('ZRANGEBYSCORE', parties, cutoff, at, 'WITHSCORES')
redis.call('PEXPIRE', events, ttl)
redis.call('PEXPIRE', amounts, ttl)
redis.call('PEXPIRE', parties, ttl)
return {added, inside, values, firsts}
"""


@dataclass(frozen=True)
class Observation:
    """What the windows hold for one account and currency once an event is added."""

    added: bool
    movements: list[Movement]
    counterparties_first_seen: list[int]


class Windows:
    """Args:
    client: a Redis client.
    environment: live and sandbox windows never mix.
    horizon_ms: the longest window; older events are trimmed.
    """

    def __init__(self, client: redis.Redis, environment: str, horizon_ms: int) -> None:
        self.client = client
        self.prefix = f"ledgerstream:{environment}:aml:"
        self.horizon_ms = horizon_ms
        self.ttl_ms = horizon_ms + 3_600_000
        self._script = client.register_script(WINDOW)

    def keys(self, account: str, currency: str) -> list[str]:
        base = f"{self.prefix}{{{account}:{currency}}}"  # one hash slot per account and currency
        return [f"{base}:events", f"{base}:amounts", f"{base}:counterparties"]

    def observe_many(
        self, items: list[tuple[str, str, str, int, int, Direction, str | None]]
    ) -> list[Observation]:
        """Add (account, currency, event id, time ms, units, direction, counterparty) in order;
        one pipelined round trip for the batch, each script atomic."""
        pipe = self.client.pipeline(transaction=False)
        for account, currency, event_id, at_ms, units, direction, party in items:
            self._script(
                keys=self.keys(account, currency),
                args=[event_id, at_ms, f"{units}|{direction}", self.horizon_ms, party or "", self.ttl_ms],
                client=pipe,
            )
        return [_observation(raw) for raw in pipe.execute()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(score: bytes | str) -> int:
    return int(Decimal(_text(score)))


def _observation(raw: list) -> Observation:
    added, inside, values, firsts = raw
    movements = []
    for i in range(0, len(inside), 2):
        value = _text(values[i // 2])
        if not value:
            continue
        units, direction = value.split("|")
        movements.append(Movement(_text(inside[i]), _ms(inside[i + 1]), int(units), direction))  # type: ignore[arg-type]
    first_seen = [_ms(firsts[i + 1]) for i in range(0, len(firsts), 2)]
    return Observation(bool(added), movements, first_seen)
