"""The latest market rate per pair, cached in Redis.

One hash per pair and environment (`ledgerstream:<env>:fx:rate:<BASE/QUOTE>`:
bid, ask, source, quoted_at in microseconds) with a TTL. A Lua script replaces
the cached rate only with a newer quote, in one round trip, so a replayed or
reordered old update never overwrites a fresher rate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import redis

from streams.fx.pricing import Rate
from topics.events import to_micros

SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'quoted_at')
if current and tonumber(current) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], 'bid', ARGV[1], 'ask', ARGV[2], 'source', ARGV[3], 'quoted_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RateCache:
    """Args:
    client: a Redis client.
    environment: live and sandbox rates never mix.
    ttl_seconds: how long a rate stays cached without an update (24 h by default).
    """

    def __init__(self, client: redis.Redis, environment: str, ttl_seconds: int) -> None:
        self.client = client
        self.prefix = f"ledgerstream:{environment}:fx:rate:"
        self.ttl = ttl_seconds
        self._set = client.register_script(SET_IF_NEWER)

    def put_many(self, rates: list[Rate]) -> list[bool]:
        """Cache each rate unless a newer quote for its pair is cached; True where it was stored."""
        pipe = self.client.pipeline(transaction=False)
        for rate in rates:
            self._set(
                keys=[self.prefix + rate.pair],
                args=[str(rate.bid), str(rate.ask), rate.source, to_micros(rate.quoted_at), self.ttl],
                client=pipe,
            )
        return [bool(r) for r in pipe.execute()]

    def get(self, pair: str) -> Rate | None:
        raw = self.client.hgetall(self.prefix + pair)
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        base, quote = pair.split("/")
        micros = int(fields["quoted_at"])
        quoted_at = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
        return Rate(
            pair=pair,
            base=base,
            quote=quote,
            bid=Decimal(fields["bid"]),
            ask=Decimal(fields["ask"]),
            source=fields["source"],
            quoted_at=quoted_at,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
