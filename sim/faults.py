"""Seeded faults: which kinds a run has, and the executor that injects crashes and outages.

Kinds (`--faults`, comma-separated, or `all`):
  rpc      errors, timeouts and latency on an RPC endpoint (EVM mode: a faulty proxy)
  lag      one endpoint lagging the head (EVM mode)
  redis    outage windows: the collector's Redis operations fail for a while
  crash    the collector dies at a random effect boundary (before or after EXEC) and
           restarts from Redis
  reorg    reorgs of depth 1..K (fast mode: a forked synthetic chain; EVM: snapshot/revert)
  deepreorg  a reorg deeper than MAX_REORG_DEPTH (fast mode; EVM mode: not applicable, the
           anvil reset test covers it live): the epochs released in the replaced blocks are
           batched again from the new chain, their old batches stay pushed (counted apart)
  relayer  the tx relayer answers 5xx or stalls
Each kind draws from its own RNG seeded by (seed, kind), so enabling one kind does not shift
another's draws.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from seqcollector.core.effects import Effect
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.executor import RedisExecutor

KINDS = ("rpc", "lag", "redis", "crash", "reorg", "relayer", "deepreorg")
WORLD_KINDS = frozenset({"reorg", "deepreorg"})  # faults that change the chain, hence the effects


class FaultSpecError(ValueError):
    """A bad --faults value; the message names it and lists the kinds."""


def parse_faults(spec: str) -> frozenset[str]:
    """`all`, `none`/empty, or a comma-separated list of KINDS."""
    text = spec.strip().lower()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(KINDS)
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise FaultSpecError(
            f"--faults: unknown kind(s) {', '.join(unknown)}; use all or some of {', '.join(KINDS)}"
        )
    return frozenset(kinds)


def fault_rng(seed: int, kind: str) -> random.Random:
    return random.Random(f"{seed}:{kind}")


class SimCrash(BaseException):
    """The simulated process death: not an Exception, so no retry loop swallows it."""


def find_crash(exc: BaseException) -> BaseException | None:
    """The SimCrash in `exc` (a task group wraps it in exception groups), if any."""
    if isinstance(exc, SimCrash):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_crash(inner)
            if found is not None:
                return found
    return None


class FaultyExecutor(RedisExecutor):
    """A RedisExecutor that crashes (`crash`) or loses Redis for a while (`redis`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        seed: int,
        kinds: frozenset[str],
        crash_rate: float = 0.04,
        outage_rate: float = 0.03,
        crash_at: frozenset[tuple[int, str]] = frozenset(),
    ) -> None:
        super().__init__(redis, namespace)
        self.crash_at = crash_at  # (commit call number, "before EXEC" | "after EXEC")
        self.commits = 0
        self._crash = fault_rng(seed, "crash") if "crash" in kinds else None
        self._redis_rng = fault_rng(seed, "redis") if "redis" in kinds else None
        self.crash_rate = crash_rate
        self.outage_rate = outage_rate
        self.outage_left = 0
        self.log: list[str] = []  # what was injected, in order

    def maybe_outage(self, what: str) -> None:
        """Raise a Redis connection error while an outage lasts (`redis`); `what`: the
        operation about to run. Also the `before` hook of this store's readers."""
        rng = self._redis_rng
        if rng is None:
            return
        if self.outage_left == 0 and rng.random() < self.outage_rate:
            self.outage_left = rng.randint(2, 6)
            self.log.append(f"redis outage of {self.outage_left} operations at {what}")
        if self.outage_left > 0:
            self.outage_left -= 1
            raise RedisConnectionError(f"injected Redis outage ({what})")

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        self.maybe_outage(f"commit of input {seq}")
        self.commits += 1
        when = None
        if self._crash is not None and self._crash.random() < self.crash_rate:
            when = self._crash.choice(("before EXEC", "after EXEC"))
        for point in ("before EXEC", "after EXEC"):
            if (self.commits, point) in self.crash_at:
                when = point
        if when == "before EXEC":
            self.log.append(f"crash before EXEC of input {seq} (block {block})")
            raise SimCrash(self.log[-1])
        done = await super().commit(seq, block, effects, state)
        if when == "after EXEC":
            self.log.append(f"crash after EXEC of input {seq} (block {block})")
            raise SimCrash(self.log[-1])
        return done

    def reader(self) -> SubmissionSetReader:
        """The window reader for this executor's store, with the same outages."""
        return SubmissionSetReader(self.redis, before=self.maybe_outage)
