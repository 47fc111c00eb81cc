"""Per-provider rate limiting and bounded body reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from topics.errors import LedgerstreamError


class TokenBucket:
    """`per_second` tokens a second up to `burst`; one request takes one token."""

    def __init__(self, per_second: float, burst: int, now: float) -> None:
        self.per_second, self.burst = per_second, burst
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ClientBuckets:
    """One token bucket per client address, cheap enough to run before a body is read. At most
    `capacity` clients are remembered (the oldest are forgotten first), so a spray of addresses
    costs bounded memory."""

    def __init__(self, per_second: float, burst: int, capacity: int = 10_000) -> None:
        self.per_second, self.burst, self.capacity = per_second, burst, capacity
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, client: str, now: float) -> bool:
        bucket = self.buckets.pop(client, None) or TokenBucket(self.per_second, self.burst, now)
        self.buckets[client] = bucket  # most recently seen last
        if len(self.buckets) > self.capacity:
            del self.buckets[next(iter(self.buckets))]
        return bucket.take(now)


class BodyTooLarge(LedgerstreamError):
    pass


class BodyTooSlow(LedgerstreamError):
    pass


async def read_bounded(chunks: AsyncIterator[bytes], limit: int, timeout: float) -> bytes:
    """The whole body, refusing more than `limit` bytes (chunked or not) and bodies that take
    longer than `timeout` seconds to arrive."""
    parts: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body over {limit} bytes")
            parts.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise BodyTooSlow(f"body not received within {timeout:g}s") from None
    return b"".join(parts)
