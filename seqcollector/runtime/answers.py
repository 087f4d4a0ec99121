"""Answers to the core's queries, read from Redis: the submission sets of a closed window.

`SubmissionSetReader.answer(query)` -> the `SubmissionSets` input, normally one `SUNION` of
the window's `SnapshotCollector.<lc>.<epoch>.<header>` keys (one round trip). The sets are
written upstream and may hold anything; nothing in them raises here or in the core:

- a key that is not a set makes the `SUNION` fail (WRONGTYPE): the keys' types are read (one
  more round trip) and the sets are read without it; the key goes to the core as skipped,
  with its type;
- a member that is not UTF-8, or that the core would skip (`core.batching.classify_member`:
  not `<market>.<epoch>.<project>.<slot>`, a slot above 2^64-1), goes to the core as skipped,
  shortened, with the set holding it (one `SISMEMBER` per window key, one round trip, for the
  first `ATTRIBUTED` such members), so the alert names the key. The core classifies the
  members again: it trusts no input.

Every read is bounded by the caller's deadline; a Redis error other than WRONGTYPE
propagates (the group is retried).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from seqcollector.core.batching import NOT_UTF8, WRONG_TYPE_KEY, classify_member
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.core.inputs import Skipped, SubmissionSets

ATTRIBUTED = 20  # skipped members whose set is looked up (the alert shows a few)
_TYPE_RACES = 3  # a key changing type between TYPE and SUNION: read again, this often
_SHOWN = 80  # characters or bytes of a member shown


class SetsChangedType(RuntimeError):
    """The window's keys kept changing type while being read."""


class SubmissionSetReader:
    """Reads the sets of a window; `before(what)` runs before each Redis operation (the
    simulation injects outages there). `clock` (unix seconds; `run` gives the wall clock)
    stamps each answer's `read_at`, for the core to tell a window read after its sets'
    TTL `sets_ttl_s` (`core.expired_sets`); without it `read_at` is 0 (not known)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        before: Callable[[str], None] | None = None,
        clock: Callable[[], float] | None = None,
        sets_ttl_s: int = 0,
    ) -> None:
        self._redis = redis
        self._before = before
        self._clock = clock
        self._sets_ttl_s = sets_ttl_s if clock is not None else 0

    async def answer(self, query: QuerySubmissionSets) -> SubmissionSets:
        """The `SubmissionSets` answer to `query`: members sorted, skipped entries named."""
        read_at = int(self._clock()) if self._clock is not None else 0
        raw, skipped = await self._union(query)
        members: list[str] = []
        bad: list[tuple[str, bytes]] = []  # (reason, member)
        for member in raw:
            try:
                text = member.decode()
            except UnicodeDecodeError:
                bad.append((NOT_UTF8, member))
                continue
            parsed = classify_member(text)
            if isinstance(parsed, str):
                bad.append((parsed, member))
            else:
                members.append(text)
        if bad:
            bad.sort()
            holders = await self._holders([m for _, m in bad[:ATTRIBUTED]], query)
            for i, (reason, member) in enumerate(bad):
                found = holders[i] if i < len(holders) else []
                detail = _show(member) + (f" (and {len(found) - 1} other sets)" * (len(found) > 1))
                skipped.append(Skipped(reason, found[0] if found else "", detail))
        members.sort()
        return SubmissionSets(
            query.query_id,
            query.market,
            query.epoch,
            members,
            skipped,
            read_at=read_at,
            sets_ttl_s=self._sets_ttl_s,
        )

    async def _union(self, query: QuerySubmissionSets) -> tuple[list[bytes], list[Skipped]]:
        """The members of the keys that are sets, and the keys that are something else."""
        keys = list(query.keys)
        if not keys:
            return [], []
        self._notify(f"submission-set read of market {query.market} epoch {query.epoch}")
        try:
            return _as_bytes(await self._redis.sunion(keys)), []
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
        for _ in range(_TYPE_RACES):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                types = [_text(t) for t in await pipe.execute()]
            sets = [k for k, t in zip(keys, types, strict=True) if t == "set"]
            wrong = [
                Skipped(WRONG_TYPE_KEY, k, f"a {t}, not a set")
                for k, t in zip(keys, types, strict=True)
                if t not in ("set", "none")
            ]
            try:
                members = _as_bytes(await self._redis.sunion(sets)) if sets else []
            except ResponseError as exc:
                if not str(exc).startswith("WRONGTYPE"):
                    raise
                continue
            return members, wrong
        raise SetsChangedType(
            f"market {query.market} epoch {query.epoch}: the window's SnapshotCollector keys "
            f"kept changing type while read ({_TYPE_RACES} attempts); retrying"
        )

    async def _holders(
        self, members: Sequence[bytes], query: QuerySubmissionSets
    ) -> list[list[str]]:
        """For each member, the window's keys (sorted) whose set holds it."""
        keys = sorted(query.keys)
        self._notify(f"skipped-member lookup of market {query.market} epoch {query.epoch}")
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in members:
                for key in keys:
                    pipe.sismember(key, member)  # type: ignore[arg-type]
            replies = await pipe.execute(raise_on_error=False)
        out: list[list[str]] = []
        for i in range(len(members)):
            row = replies[i * len(keys) : (i + 1) * len(keys)]
            out.append([k for k, hit in zip(keys, row, strict=True) if hit == 1])
        return out

    def _notify(self, what: str) -> None:
        if self._before is not None:
            self._before(what)


def _as_bytes(members: set[bytes | str]) -> list[bytes]:
    return [m if isinstance(m, bytes) else m.encode() for m in members]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _show(member: bytes) -> str:
    """A member as the alert shows it: text if it is UTF-8, else its bytes, shortened."""
    try:
        text = member.decode()
    except UnicodeDecodeError:
        if len(member) <= _SHOWN:
            return repr(member)
        return f"{member[:_SHOWN]!r}... ({len(member)} bytes)"
    if len(text) <= _SHOWN:
        return repr(text)
    return f"{text[:_SHOWN]!r}... ({len(text)} chars)"
