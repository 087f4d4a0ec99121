"""The upstream dequeuer, as every simulation plays it: submissions into Redis exactly as
production writes them.

Each submission is a member of the set `SnapshotCollector.<lc>.<epoch>.<header>` (SADD,
then EXPIRE of the set, 20 min); with `values`, the submission key also holds its value
(`<uuid>.<protobuf JSON>`, SET with the same TTL). The collector reads the sets only; the
values are there because production has them (and the load runs measure with them).
One flush is one round trip: a Lua script does the SADD + EXPIRE of every set it touches
(load runs write a few hundred thousand submissions), the values follow in the same pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import redis.asyncio as aioredis

SET_TTL_S = 20 * 60

# ARGV: ttl, the member count of each key, then the members of each key in KEYS order.
_ADD_TO_SETS = """
local at = #KEYS + 2
for i, key in ipairs(KEYS) do
  local last = at + tonumber(ARGV[1 + i]) - 1
  for first = at, last, 1000 do  -- unpack() is bounded by Lua's stack
    redis.call('SADD', key, unpack(ARGV, first, math.min(first + 999, last)))
  end
  redis.call('EXPIRE', key, ARGV[1])
  at = last + 1
end
return #KEYS
"""


class Submission(NamedTuple):
    """One snapshotter's submission: `member` into the set `key`. `conflicting`: the same
    key submitted again with another CID (its value replaces the first one's)."""

    key: str
    member: str
    conflicting: bool = False


class Dequeuer:
    """Writes submissions into `redis` as the dequeuer does; `values=False` writes the sets
    only (the collector never reads the values)."""

    def __init__(self, redis: aioredis.Redis, values: bool = True) -> None:
        self.redis = redis
        self.values = values

    async def write(self, submissions: Sequence[Submission]) -> None:
        """Write `submissions`, in order (a later value of the same key wins), in one round
        trip; nothing when there are none."""
        if not submissions:
            return
        by_key: dict[str, list[str]] = {}
        for s in submissions:
            by_key.setdefault(s.key, []).append(s.member)
        counts = [str(len(members)) for members in by_key.values()]
        members = [m for ms in by_key.values() for m in ms]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.eval(_ADD_TO_SETS, len(by_key), *by_key, SET_TTL_S, *counts, *members)
            if self.values:
                for s in submissions:
                    text = s.member + ("#2" if s.conflicting else "")
                    pipe.set(s.member, submission_value(text), ex=SET_TTL_S)
            await pipe.execute()


def submission_value(member: str) -> str:
    """`<uuid>.<protobuf JSON>` as the dequeuer stores it (deterministic here)."""
    digest = hashlib.sha256(member.encode()).hexdigest()
    uid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    slot = member.split(".")[-1]
    return f'{uid}.{{"request":{{"slotId":{slot}}},"snapshotCid":"bafy{digest[:16]}"}}'
