"""Limits on Redis (docs/limits.md, "Limits on Redis"): the moving-window counters and the
stuck sessions shared by every gateway process on the same Redis and `limits.key_prefix`.

The counters are the `limits` library's Redis storage over redis-py's asyncio client; the
stuck sessions are one hash per session, expiring when its refusal ends, and a sorted
set (session key -> end of its refusal) to list and count them without scanning the
keyspace, expiring with the last refusal it holds. Both share one connection pool, sized
and timed out by the `limits` config.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis.asyncio
from limits.aio.storage import RedisStorage
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.config import Limits
from gateway.limiter import Limiter, StuckSession

# KEYS: the session's hash, the index. ARGV: agent, session, reason, now, until (seconds).
_FLAG = """
redis.call('HSETNX', KEYS[1], 'since', ARGV[4])
redis.call('HSET', KEYS[1], 'agent', ARGV[1], 'session', ARGV[2], 'reason', ARGV[3],
           'until', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'refusals', 1)
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[5]) * 1000))
redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], math.ceil(tonumber(last[2]) * 1000))
return redis.call('ZCARD', KEYS[2])
"""


def open_redis_limits(limits: Limits) -> tuple[Limiter, RedisStuckSessions]:
    """The limiter and stuck sessions on the Redis of `limits.storage`; no connection is
    made until the first call needs one."""
    url = limits.redis_url
    assert url is not None, "limits.storage is memory"
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=limits.pool_size,
        timeout=limits.timeout_s,  # the longest wait for a free connection of the pool
        socket_connect_timeout=limits.connect_timeout_s,
        socket_timeout=limits.timeout_s,
        # One immediate retry, on a new connection: the pooled ones are dead after Redis
        # restarts. redis-py's default backs off for seconds, which would hold calls.
        retry=Retry(NoBackoff(), 1),
        # Header values that are not UTF-8 reach here as surrogates (session names are
        # counted and listed): they go to Redis as the bytes the agent sent.
        encoding_errors="surrogateescape",
    )
    storage = RedisStorage(
        "async+" + url,
        implementation="redispy",
        key_prefix=limits.key_prefix + "limits",
        # Typed as scalar options by `limits`, passed on to redis-py's client as it is.
        connection_pool=cast(Any, pool),
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    limiter = Limiter(storage, where=f"Redis at {limits.where}", close=pool.aclose)
    return limiter, RedisStuckSessions(client, limits.key_prefix)


class RedisStuckSessions:
    """The stuck sessions of every gateway process on this Redis."""

    def __init__(self, client: redis.asyncio.Redis, key_prefix: str) -> None:
        self._client = client
        self._index = key_prefix + "stuck-sessions"
        self._entry_prefix = key_prefix + "stuck-session:"
        self._flag = client.register_script(_FLAG)

    async def flag(self, agent: str, session: str, reason: str, retry_after_s: int) -> int:
        moment = time.time()
        # Agent ids never hold ":", so agent and session cannot run into each other.
        key = f"{self._entry_prefix}{agent}:{session}"
        args = [agent, session, reason, repr(moment), repr(moment + retry_after_s)]
        return int(await self._flag(keys=[key, self._index], args=args))

    async def current(self) -> list[StuckSession]:
        moment = time.time()
        keys = await self._client.zrangebyscore(self._index, moment, "+inf")
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            entries = await pipe.execute()
        stuck = [
            StuckSession(
                agent=entry[b"agent"].decode(),
                session=entry[b"session"].decode(errors="surrogateescape"),
                reason=entry[b"reason"].decode(),
                since=float(entry[b"since"]),
                until=float(entry[b"until"]),
                refusals=int(entry[b"refusals"]),
            )
            for entry in entries
            if entry  # its refusal ended since the index was read
        ]
        return sorted(stuck, key=lambda entry: entry.since)
