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
  failover active/standby (`runtime.lease`): the active collector is paused at a commit,
           past its lease (the lease key is expired under it, deterministically: no wall
           clock), a standby takes the lease (token + 1) and takes over from the
           checkpoint; after a standby commit that leaves an outbox entry pending (or
           30 commits) the paused one resumes and tries its commit and a delivery: both
           must be refused with `LeaseLost`, writing and sending nothing (`FenceCheck`,
           invariant "no commit after lease loss")
Each kind draws from its own RNG seeded by (seed, kind), so enabling one kind does not shift
another's draws.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from seqcollector.core.effects import (
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    SetAdd,
    SetRemove,
    SetValue,
)
from seqcollector.runtime.answers import SubmissionSetReader
from seqcollector.runtime.executor import RedisExecutor
from seqcollector.runtime.lease import Lease, LeaseLost
from seqcollector.runtime.outbox import OutboxDispatcher

KINDS = ("rpc", "lag", "redis", "crash", "reorg", "relayer", "deepreorg", "failover")
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


class SimFailover(SimCrash):
    """The active collector paused past its lease: its run stops here (its task is blocked)
    and a standby takes over; the paused one's step is kept to be tried again later."""


@dataclass
class _Paused:
    """The paused active: the step it was committing, its executor (with the checkpoint
    it had cached) and its lease (the value it still believes it holds)."""

    seq: int
    block: int | None
    effects: Sequence[Effect]
    state: bytes
    executor: RedisExecutor
    lease: Lease
    standby_commits: int = 0


RESUME_WITHIN = 30  # standby commits; sooner once the outbox holds an entry to deliver


@dataclass(frozen=True)
class FenceCheck:
    """What a paused active did when it resumed after a standby took over."""

    seq: int
    block: int | None
    commit: str  # "LeaseLost" (refused), or what happened instead
    wrote: list[str]  # keys of its step (or of the namespace) that changed meanwhile
    pending: int  # outbox entries pending when it tried to deliver
    delivery: str  # "LeaseLost", "delivered 0" (what was pending went meanwhile), "delivered n"
    posts: int  # POSTs its dispatcher started

    @property
    def sent_nothing(self) -> bool:
        return self.delivery in ("LeaseLost", "delivered 0") and not self.posts

    @property
    def ok(self) -> bool:
        return self.commit == "LeaseLost" and not self.wrote and self.sent_nothing


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
        lease: Lease | None = None,
        dispatcher_for: Callable[[Lease], OutboxDispatcher] | None = None,
    ) -> None:
        super().__init__(redis, namespace, lease=lease)
        self.crash_at = crash_at  # (commit call number, "before EXEC" | "after EXEC")
        self.commits = 0
        self._crash = fault_rng(seed, "crash") if "crash" in kinds else None
        self._redis_rng = fault_rng(seed, "redis") if "redis" in kinds else None
        self.crash_rate = crash_rate
        self.outage_rate = outage_rate
        self.outage_left = 0
        self.log: list[str] = []  # what was injected, in order
        # failover: the commit number of the next pause, the paused active, what it did
        self._failover = fault_rng(seed, "failover") if "failover" in kinds else None
        self._next_pause = self._failover.randint(3, 30) if self._failover else 0
        self._paused: _Paused | None = None
        self._standbys = 0
        self.dispatcher_for = dispatcher_for
        self.fence_checks: list[FenceCheck] = []

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
        if self.lease is not None and self.lease.value is None and not self._standbys:
            await self.lease.acquire()  # the first active takes the lease
        if when is None and self._pause_due():
            await self._pause(seq, block, effects, state)
        if when == "before EXEC":
            self.log.append(f"crash before EXEC of input {seq} (block {block})")
            raise SimCrash(self.log[-1])
        done = await super().commit(seq, block, effects, state)
        if self._paused is not None:  # the standby committed: the paused one may wake up
            self._paused.standby_commits += 1
            pending = self._keys.outbox_pending
            if self._paused.standby_commits >= RESUME_WITHIN or await self.redis.zcard(pending):
                await self._resume()
        if when == "after EXEC":
            self.log.append(f"crash after EXEC of input {seq} (block {block})")
            raise SimCrash(self.log[-1])
        return done

    # -- failover ------------------------------------------------------------------------

    def _pause_due(self) -> bool:
        return (
            self._failover is not None
            and self.lease is not None
            and self.lease.value is not None
            and self._paused is None
            and self.commits >= self._next_pause
        )

    async def _pause(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> None:
        """Pause the active here, past its lease: a standby takes the lease; raise
        `SimFailover` (the active's run stops; its step is kept for `_resume`)."""
        assert self.lease is not None and self._failover is not None
        stale = Lease(self.redis, self.namespace, self.lease.ttl_s, holder=self.lease.holder)
        stale.value = self.lease.value
        paused = RedisExecutor(self.redis, self.namespace, lease=stale)
        await paused.load()  # the checkpoint it had when it was paused
        await self.redis.delete(self.lease.key)  # the TTL ran out while it was paused
        self._standbys += 1
        self.lease.holder = f"sim-standby-{self._standbys}"
        taken = await self.lease.acquire()
        assert self.lease.value is not None, f"the standby did not get the lease: {taken}"
        self._paused = _Paused(seq, block, effects, state, paused, stale)
        self._next_pause = self.commits + self._failover.randint(20, 120)
        self.log.append(
            f"failover at input {seq} (block {block}): {stale.value} paused past its lease, "
            f"standby {self.lease.value} takes over"
        )
        raise SimFailover(self.log[-1])

    async def _resume(self) -> None:
        """The paused active wakes up and tries its commit and a delivery."""
        paused, self._paused = self._paused, None
        assert paused is not None
        watched = [paused.executor.namespace + k for k in (":checkpoint", ":state")]
        watched += [
            k
            for e in paused.effects
            if not isinstance(e, ListPush)  # the finalizer pops queues meanwhile
            for k in _keys_of(e)
        ]
        before = [await self.redis.dump(k) for k in watched]
        try:
            await paused.executor.commit(paused.seq, paused.block, paused.effects, paused.state)
            commit = "committed"
        except LeaseLost:
            commit = "LeaseLost"
        except Exception as exc:  # another refusal: not the fence
            commit = f"{type(exc).__name__}: {exc}"
        after = [await self.redis.dump(k) for k in watched]
        wrote = [k for k, a, b in zip(watched, before, after, strict=True) if a != b]
        pending = int(await self.redis.zcard(paused.executor.namespace + ":outbox:pending"))
        delivery, posts = "no dispatcher", 0
        if self.dispatcher_for is not None:
            dispatcher = self.dispatcher_for(paused.lease)
            try:
                delivery = f"delivered {await dispatcher.deliver_pending()}"
            except LeaseLost:
                delivery = "LeaseLost"
            finally:
                posts = sum(lane.peak_in_flight for lane in dispatcher.lanes.values())
                await dispatcher.aclose()
        check = FenceCheck(paused.seq, paused.block, commit, wrote, pending, delivery, posts)
        self.fence_checks.append(check)
        self.log.append(
            f"failover: the paused {paused.lease.holder} resumed at input {paused.seq}: commit "
            f"{commit}, delivery {delivery} ({pending} pending)"
        )

    def reader(self) -> SubmissionSetReader:
        """The window reader for this executor's store, with the same outages."""
        return SubmissionSetReader(self.redis, before=self.maybe_outage)


def _keys_of(effect: Effect) -> list[str]:
    """The Redis keys an effect writes (none for outbox, query and report effects)."""
    if isinstance(effect, DeleteKeys):
        return list(effect.keys)
    if isinstance(effect, SetValue | IncrementBy | HashSet | SetAdd | SetRemove | ListPush):
        return [effect.key]
    return []
