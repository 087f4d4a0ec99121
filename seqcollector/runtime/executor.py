"""Apply one core step to Redis exactly once, whole or not at all: its effects, its outbox
entries, the new core state and the checkpoint, in one Lua script (the `Tracking` idea of
`eventsourcing`).

Why a script and not MULTI/EXEC: Redis does not roll back a transaction whose commands
fail. With `finalizerQueue` held as a string, EXEC wrote the step's batch counts, its
`submitBatchSize` entry and the checkpoint, while the LPUSHes were refused: the batches were
lost for good. The commit script (`_COMMIT`) works in three phases, atomically (Redis runs
nothing else meanwhile), after the fence:

0. Lease (active/standby, `runtime.lease`). With a lease, the stored `<ns>:lease` must hold
   this executor's `<holder>:<token>`; if not (it expired while this process was paused, a
   standby took over), nothing is written (`LeaseLost`).
1. Checkpoint. The stored checkpoint must be the one this executor expects. If it is
   exactly this step's, with this step's state, the step already landed (a lost reply, or
   redis-py resending the EVALSHA after a dropped connection): nothing is written. If it
   vanished, Redis lost data (`RedisDataLost`); if it is another one, a second writer
   (`ConcurrentWriterError`). Either way nothing is written.
2. Checks. Every command the step would send is checked against the key it touches, as
   the step's own earlier commands leave it: LPUSH needs a list or nothing, HSET a hash,
   ZADD a sorted set, INCRBY nothing or a string holding an int64 (Redis's own rule: no
   sign but '-', no leading zero, no space) whose sum stays an int64; the namespace's
   state and checkpoint must be strings. SET overwrites any type; DEL and EXPIRE never
   fail (TTLs are checked in Python, against Redis's 'invalid expire time' bound). A
   problem returns the list of offending keys and writes nothing (`CommitRefused`); the
   collector retries the step, reporting each attempt, until the keys are fixed.
3. Writes, in the step's order: checkpoint, state, the effects, the outbox rows. An
   INCRBY (and its EXPIRE) is written as the SET of the sum phase 2 computed, `EX ttl`
   or `KEEPTTL`: the same value and TTL in one command instead of two.

Cost: one round trip per commit (EVALSHA; the first use after a server start or SCRIPT
FLUSH adds a SCRIPT LOAD), two when the checkpoint is not cached (first commit without
`load()`, or after an error whose outcome is unknown). The MULTI/EXEC before it took two
and three. Figures: `python -m bench.commit_cost`.

Redis versions and memory. Redis >= 6.0 (`SET ... KEEPTTL`); tested on 7.0. The script
has no `#!lua` shebang because fakeredis (the embedded store) cannot parse one ("unexpected
symbol near '#'"), so Redis 7 runs it in its compatible mode. Out of memory (`maxmemory`,
noeviction): Redis decides OOM when the script starts and then refuses only a script's
first write; once a script has written it runs to its end (it may go past maxmemory). So
a commit fails with OOM before writing anything (a `ResponseError`, retried like any
Redis failure), or lands whole; it never stops half way (tested). With a shebang and no
`allow-oom` flag Redis 7 would refuse it before running: the same outcome.
A script that ran past `busy-reply-threshold` (5 s) and has written cannot be killed
(SCRIPT KILL refuses; only SHUTDOWN NOSAVE stops it), so it also lands whole. A bug in
the script after its first write would leave a partial step: the write phase therefore
sends only commands whose every precondition phase 2 checked. Eviction and FLUSHALL are
seen at the next commit as a vanished checkpoint (`RedisDataLost`).

The embedded store (fakeredis, the script run by `lupa`, Lua 5.1 like Redis) runs the same
script. The script only compares and concatenates strings (no arithmetic beyond 15 digits),
so Lua versions whose numbers are 64-bit integers give the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import fakeredis
import msgspec
import redis.asyncio as aioredis
import structlog
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    Effect,
    HashSet,
    IncrementBy,
    ListPush,
    RelayerCall,
    SetAdd,
    SetRemove,
    SetValue,
)
from seqcollector.errors import OperatorError
from seqcollector.redis_target import SentinelTarget, is_sentinel_url, parse_sentinel_url
from seqcollector.runtime.layout import (
    DEFAULT_NAMESPACE,
    Checkpoint,
    CheckpointRecord,
    StoreLayout,
    decode_record,
    encode_entry,
    encode_record,
)
from seqcollector.runtime.lease import Lease, LeaseHolder, LeaseLost

__all__ = [
    "Checkpoint",
    "CommitRefused",
    "ConcurrentWriterError",
    "KeyProblem",
    "LeaseLost",
    "RedisDataLost",
    "RedisExecutor",
    "RedisLostSteps",
    "embedded_redis",
    "redis_client",
]

log = structlog.get_logger(__name__)

# Redis refuses `SET ... EX t` and `EXPIRE k t` when t * 1000 + now overflows an int64
# ('invalid expire time'); 10**12 s (31,700 years) is far inside that bound.
MAX_TTL_S = 10**12
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
PROBLEMS_IN_MESSAGE = 5  # the error message names this many keys; `.problems` has all


class ConcurrentWriterError(OperatorError):
    """Another writer advanced the checkpoint of this namespace. Nothing was written."""

    def __init__(self, namespace: str, expected: Checkpoint | None, found: Checkpoint | None):
        self.namespace = namespace
        self.expected = expected
        self.found = found
        super().__init__(
            f"namespace {namespace!r}: another writer moved the checkpoint to {found} while "
            f"this executor expected {expected}; this step was not written. Two collectors "
            "are writing the same namespace: stop all but one, then restart it so that it "
            "reloads state and checkpoint."
        )


class RedisDataLost(OperatorError):
    """The checkpoint this executor loaded or committed is gone from Redis. Nothing was
    written; committing cannot go on (recovering is for the operator)."""

    def __init__(self, namespace: str, expected: Checkpoint, state_gone: bool):
        self.namespace = namespace
        self.expected = expected
        self.state_gone = state_gone
        what = "and the state vanished" if state_gone else "vanished (the state is still there)"
        super().__init__(
            f"namespace {namespace!r}: the checkpoint (seq {expected.seq}, block "
            f"{expected.block}) {what} from Redis: Redis lost data (FLUSHALL/FLUSHDB, a "
            "restart without persistence, eviction); stopped committing. Restore Redis from "
            "a backup (RDB/AOF), then restart the collector (see README, 'Redis lost data')."
        )


class RedisLostSteps(OperatorError):
    """Redis holds an older checkpoint of this namespace than this executor committed: its
    last steps are gone (a failover to a replica that had not received them). Nothing was
    written. The steps are redone from the chain by a collector that reloads state and
    checkpoint; with SEQ_REDIS_MIN_REPLICAS >= 1 none of their relayer calls went out."""

    def __init__(self, namespace: str, expected: Checkpoint, found: Checkpoint):
        self.namespace = namespace
        self.expected = expected
        self.found = found
        super().__init__(
            f"namespace {namespace!r}: Redis holds checkpoint seq {found.seq} (block "
            f"{found.block}), behind the seq {expected.seq} (block {expected.block}) this "
            "collector committed: the last steps were lost, as when Redis fails over to a "
            "replica that had not received them; nothing was written. The collector reloads "
            f"state and checkpoint and redoes the chain from block {found.block}."
        )


@dataclass(frozen=True)
class KeyProblem:
    """One command of a step that Redis would refuse: the key, what it holds, the command."""

    key: str
    found: str  # the key's type ("string", "list", ...) as this step would find it
    command: str  # "LPUSH", "HSET", "ZADD", "INCRBY", "SET"
    needs: str  # what the command needs: "a list", "an integer string", ...
    detail: str = ""  # e.g. the value that is not an integer, or the overflowing sum

    def __str__(self) -> str:
        found = "missing" if self.found == "none" else f"a {self.found}"
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.key} is {found}{detail}, {self.command} needs {self.needs}"


class CommitRefused(OperatorError):
    """Redis would refuse some commands of the step: nothing was written. The step is
    retried (by the collector) until the keys are fixed; then it lands whole."""

    def __init__(self, namespace: str, seq: int, block: int | None, problems: list[KeyProblem]):
        self.namespace = namespace
        self.seq = seq
        self.block = block
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:PROBLEMS_IN_MESSAGE])
        more = len(problems) - PROBLEMS_IN_MESSAGE
        if more > 0:
            shown += f"; and {more} more key(s)"
        super().__init__(
            f"namespace {namespace!r}: step seq={seq} block={block} changed nothing, Redis "
            f"would refuse it: {shown}; fix or delete the key(s); the step is retried until then"
        )


@dataclass
class _CachedCheckpoint:
    """What this executor believes is stored under `<ns>:checkpoint` (raw bytes and decoded)."""

    raw: bytes | None
    record: CheckpointRecord | None

    @classmethod
    def from_raw(cls, raw: bytes | None) -> _CachedCheckpoint:
        return cls(raw=raw, record=decode_record(raw))

    @property
    def seq(self) -> int:
        return -1 if self.record is None else self.record.seq

    @property
    def outbox_next(self) -> int:
        return 0 if self.record is None else self.record.outbox_next

    @property
    def checkpoint(self) -> Checkpoint | None:
        return None if self.record is None else self.record.checkpoint


class RedisExecutor:
    """Applies core steps to a `redis.asyncio.Redis` (real or `embedded_redis()`).

    The client must return bytes (`decode_responses=False`, the default). With `lease`
    (settable later, as `executor.lease`), every commit is fenced by it: refused with
    `LeaseLost` and nothing written unless the stored lease is still `lease.value`.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str = DEFAULT_NAMESPACE,
        lease: Lease | None = None,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisExecutor needs a client with decode_responses=False")
        self._redis = redis
        self._keys = StoreLayout(namespace)
        self._script = redis.register_script(_COMMIT)
        self._cached: _CachedCheckpoint | None = None  # None: not trusted, read it first
        # The last checkpoint known to be stored (loaded or committed): if a read finds
        # none after this, Redis lost it.
        self._known: Checkpoint | None = None
        self._last_sent: tuple[list[str], list[bytes | str]] = ([], [])  # keys, args
        self.lease = lease

    @property
    def last_commit_bytes(self) -> int:
        """Bytes of keys and arguments the last commit script call sent (metrics; counted
        on demand, so a run without metrics pays nothing)."""
        keys, args = self._last_sent
        return sum(len(k) for k in keys) + sum(len(a) for a in args)

    @property
    def namespace(self) -> str:
        return self._keys.namespace

    @property
    def redis(self) -> aioredis.Redis:
        """The client this executor commits through (queries are answered on it too)."""
        return self._redis

    async def load(self) -> tuple[bytes | None, Checkpoint | None]:
        """Read the stored core state and checkpoint (None, None on a fresh namespace).

        One round trip; the checkpoint is cached for the next commit.
        """
        state, raw = await self._redis.mget([self._keys.state, self._keys.checkpoint])
        self._cached = _CachedCheckpoint.from_raw(_as_bytes(raw))
        self._known = self._cached.checkpoint
        return _as_bytes(state), self._cached.checkpoint

    async def commit(
        self, seq: int, block: int | None, effects: Sequence[Effect], state: bytes
    ) -> bool:
        """Apply the step numbered `seq` atomically and whole: Redis effects in order,
        outbox entries, `state` and the checkpoint `(seq, block)`.

        Returns False and changes nothing if a step with this or a later seq is already
        committed. Changes nothing and raises `CommitRefused` if Redis would refuse one of
        the step's commands (a key of another type: retry once it is fixed),
        `ConcurrentWriterError` if another writer moved the checkpoint, `RedisDataLost` if
        the checkpoint vanished.
        """
        self._last_sent = ([], [])
        if self._cached is not None and seq <= self._cached.seq:
            return False
        program = _script_program(effects)  # before any I/O: a bad TTL raises, nothing sent
        if self.lease is not None and self.lease.value is None:
            raise LeaseLost(self.namespace, None, None, f"committing seq {seq} block {block}")
        try:
            if self._cached is None:
                self._cached = await self._read_checkpoint(seq, block)
                if seq <= self._cached.seq:
                    return False
            return await self._run_commit(seq, block, program, effects, state, self._cached)
        except CommitRefused:
            raise  # the script checked the stored checkpoint: the cache is still right
        except BaseException:
            self._cached = None  # outcome unknown (or another writer): read it next time
            raise

    async def _read_checkpoint(self, seq: int, block: int | None) -> _CachedCheckpoint:
        """The stored checkpoint (one round trip); raises if it vanished since this executor
        last saw one, or if the key holds another type."""
        key = self._keys.checkpoint
        try:
            found = _CachedCheckpoint.from_raw(_as_bytes(await self._redis.get(key)))
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            found_type = _as_str(await self._redis.type(key))
            problem = KeyProblem(key, found_type, "GET", "a string", "the checkpoint")
            raise CommitRefused(self.namespace, seq, block, [problem]) from None
        if found.record is None and self._known is not None:
            state_gone = not await self._redis.exists(self._keys.state)
            raise RedisDataLost(self.namespace, self._known, state_gone)
        stored = found.checkpoint
        if stored is not None and self._known is not None and stored.seq < self._known.seq:
            # Committing on top would skip the lost steps' effects for good.
            raise RedisLostSteps(self.namespace, self._known, stored)
        return found

    async def _run_commit(
        self,
        seq: int,
        block: int | None,
        program: tuple[list[str], list[bytes | str]],
        effects: Sequence[Effect],
        state: bytes,
        cached: _CachedCheckpoint,
    ) -> bool:
        """One EVALSHA of `_COMMIT`: True when the step is stored (by this call or an
        earlier attempt whose reply was lost); raises with nothing written otherwise."""
        rows = _outbox_rows(effects, first_score=cached.outbox_next)
        record = CheckpointRecord(seq, block, outbox_next=cached.outbox_next + len(rows))
        new_raw = encode_record(record)
        op_keys, ops = program
        counters = list(dict.fromkeys(e.key for e in effects if isinstance(e, IncrementBy)))
        keys = [*self._keys_of_namespace(), *op_keys, *counters]
        fence = self.lease.value if self.lease is not None else None
        args: list[bytes | str] = [
            b"E" if cached.raw is not None else b"N",
            cached.raw or b"",
            new_raw,
            state,
            str(len(rows)),
            str(len(counters)),
            fence or "",
        ]
        for entry_id, body, score in rows:
            args += [entry_id, body, str(score)]
        sent = [*args, *ops]
        self._last_sent = (keys, sent)
        reply = await self._script(keys=keys, args=sent)
        outcome = _as_str(reply[0])
        if outcome in ("applied", "done"):
            self._cached = _CachedCheckpoint(raw=new_raw, record=record)
            self._known = record.checkpoint
            if outcome == "done":
                log.info("commit_already_applied", namespace=self.namespace, seq=seq, block=block)
            return True
        if outcome == "refused":
            problems = [
                KeyProblem(*(_as_str(v) for v in reply[i : i + 5])) for i in range(1, len(reply), 5)
            ]
            log.error(
                "commit_refused",
                namespace=self.namespace,
                seq=seq,
                block=block,
                problems=[str(p) for p in problems[:10]],
                problem_count=len(problems),
            )
            raise CommitRefused(self.namespace, seq, block, problems)
        if outcome == "lease":
            assert self.lease is not None  # the script fences only with a value
            held = _as_bytes(reply[1]) if len(reply) > 1 else None
            now = None if held is None else LeaseHolder.parse(held)
            raise self.lease.lost(now, f"committing seq {seq} block {block}", ours=fence)
        if outcome == "lost":
            assert cached.checkpoint is not None  # the script says lost only when expected
            raise RedisDataLost(self.namespace, cached.checkpoint, state_gone=reply[1] == 1)
        assert outcome == "conflict", f"unknown commit script reply {reply!r}"
        found = _decoded_or_none(_as_bytes(reply[1]))
        ours = cached.checkpoint
        if found is not None and ours is not None and found.seq < ours.seq:
            raise RedisLostSteps(self.namespace, ours, found)
        raise ConcurrentWriterError(self.namespace, cached.checkpoint, found)

    def _keys_of_namespace(self) -> list[str]:
        k = self._keys
        return [k.checkpoint, k.state, k.outbox, k.outbox_pending, k.lease]


def _outbox_rows(effects: Sequence[Effect], first_score: int) -> list[tuple[str, bytes, int]]:
    """The step's outbox entries -> (id, JSON body, pending score in emission order).

    A repeated id keeps its first place and its last body."""
    bodies: dict[str, bytes] = {}
    for effect in effects:
        if isinstance(effect, RelayerCall | Alert):
            bodies[effect.id] = encode_entry(effect)
    return [(entry_id, body, first_score + i) for i, (entry_id, body) in enumerate(bodies.items())]


def _script_program(effects: Sequence[Effect]) -> tuple[list[str], list[bytes | str]]:
    """The Redis effects as the script's ops and the keys they take from KEYS, in order:
    S value ttl (1 key) | D count (count keys) | L value | H field value | I amount ttl |
    A member ttl (SADD, EXPIRE) | R member (SREM).
    Outbox, query and report effects have none. Raises ValueError on a TTL or an INCRBY
    amount Redis would refuse (before anything is sent)."""
    keys: list[str] = []
    ops: list[bytes | str] = []
    for effect in effects:
        if isinstance(effect, IncrementBy):
            if not INT64_MIN <= effect.amount <= INT64_MAX:
                raise ValueError(
                    f"effect on {effect.key}: INCRBY amount {effect.amount} is outside int64 "
                    "(Redis would refuse it); this is a bug in the core, nothing was written"
                )
            keys.append(effect.key)
            ops += [b"I", str(effect.amount), str(_ttl(effect.key, effect.ttl_s))]
        elif isinstance(effect, SetValue):
            keys.append(effect.key)
            ops += [b"S", effect.value, str(_ttl(effect.key, effect.ttl_s))]
        elif isinstance(effect, DeleteKeys):
            if effect.keys:
                keys += effect.keys
                ops += [b"D", str(len(effect.keys))]
        elif isinstance(effect, ListPush):
            keys.append(effect.key)
            ops += [b"L", effect.value]
        elif isinstance(effect, HashSet):
            keys.append(effect.key)
            ops += [b"H", effect.field, effect.value]
        elif isinstance(effect, SetAdd):
            keys.append(effect.key)
            ops += [b"A", effect.member, str(_ttl(effect.key, effect.ttl_s))]
        elif isinstance(effect, SetRemove):
            keys.append(effect.key)
            ops += [b"R", effect.member]
    return keys, ops


def _ttl(key: str, ttl_s: int | None) -> int:
    """A TTL as the script takes it (0: none), checked against what Redis accepts."""
    if ttl_s is None or ttl_s == 0:
        return 0
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(
            f"effect on {key}: ttl_s={ttl_s} is outside 1..{MAX_TTL_S} (Redis would refuse "
            "it); this is a bug in the core or its configuration, nothing was written"
        )
    return ttl_s


def _decoded_or_none(raw: bytes | None) -> Checkpoint | None:
    try:
        return _CachedCheckpoint.from_raw(raw).checkpoint
    except msgspec.DecodeError:
        return None  # not a checkpoint this collector wrote


def _as_bytes(value: bytes | str | None) -> bytes | None:
    assert not isinstance(value, str), "the executor's client must not decode responses"
    return value


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# The commit, whole or not at all (see the module docstring for the three phases).
# KEYS: checkpoint, state, outbox, outbox:pending, lease, the ops' keys in order, then each
# key an INCRBY touches, once (`ncounters` of them).
# ARGV: 'E' expected checkpoint | 'N' '' (none expected), the new checkpoint, the state,
# the outbox row count n, ncounters, the lease value expected ('' : not fenced),
# n x (id, body, score), then the ops (see `_script_program`).
# Replies: {'applied'} | {'done'} (already stored) | {'conflict', stored checkpoint} |
# {'lease', the lease's value now or nil} (fenced out, nothing written) |
# {'lost', 1 if the state is gone too} | {'refused', 5 strings per problem (KeyProblem)}.
_COMMIT = r"""
local ckey, skey, okey, pkey, lkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local unpack = unpack or table.unpack
local new_ck, state, nrows, ncounters = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local first_row, first_op = 8, 8 + 3 * nrows
local problems, seen = {}, {}

-- 0. The fence: the lease must still be ours (before anything is read or written). A lease
-- gone with the checkpoint it guarded is Redis losing data (FLUSHALL, a restart without
-- persistence), reported as such, not as a lease lost to another process.
if ARGV[7] ~= '' then
  local held = redis.call('GET', lkey)
  if held ~= ARGV[7] then
    if held == false and ARGV[1] == 'E' and redis.call('EXISTS', ckey) == 0 then
      return {'lost', redis.call('EXISTS', skey) == 0 and 1 or 0}
    end
    return {'lease', held}
  end
end

local function type_of(key)
  return redis.call('TYPE', key)['ok']
end
local function problem(key, found, command, needs, detail)
  if not seen[key .. '\0' .. command] then
    seen[key .. '\0' .. command] = true
    for _, v in ipairs({key, found, command, needs, detail or ''}) do
      problems[#problems + 1] = v
    end
  end
end
local function refused()
  table.insert(problems, 1, 'refused')
  return problems
end

-- 1. The checkpoint.
local ct = type_of(ckey)
if ct ~= 'none' and ct ~= 'string' then
  problem(ckey, ct, 'GET', 'a string', 'the checkpoint of this namespace')
  return refused()
end
local stored_ck = redis.call('GET', ckey)
local expected = false
if ARGV[1] == 'E' then expected = ARGV[2] end
if stored_ck ~= expected then
  if stored_ck == new_ck and type_of(skey) == 'string' and redis.call('GET', skey) == state then
    return {'done'}
  end
  if stored_ck == false then
    return {'lost', type_of(skey) == 'none' and 1 or 0}
  end
  return {'conflict', stored_ck}
end

-- 2. The checks: each key's type (and counter's value) as the step's earlier ops leave it.
local vtype, value, ours = {}, {}, {}  -- value: of counters; ours: type made by this step
local sums = {}  -- op position -> the value its INCRBY leaves (written by SET in phase 3)

-- The counters' stored values in a few MGETs: a string, or false for a key missing or of
-- another type; `all_missing`: every false one is missing (one EXISTS tells).
local counter, all_missing, unread = {}, true, {}
local first_counter = #KEYS - ncounters + 1
for i = first_counter, #KEYS, 1000 do
  local last = math.min(i + 999, #KEYS)
  local values = redis.call('MGET', unpack(KEYS, i, last))
  for j = i, last do
    counter[KEYS[j]] = values[j - i + 1]
    if not values[j - i + 1] then unread[#unread + 1] = KEYS[j] end
  end
end
for i = 1, #unread, 1000 do
  if redis.call('EXISTS', unpack(unread, i, math.min(i + 999, #unread))) > 0 then
    all_missing = false
  end
end

local function vtype_of(key)
  local t = vtype[key]
  if t == nil then
    if counter[key] then
      t = 'string'
    elseif counter[key] == false and all_missing then
      t = 'none'
    else
      t = type_of(key)
    end
    vtype[key] = t
  end
  return t
end
local function needs_type(key, want, command, needs)
  local t = vtype_of(key)
  if t ~= 'none' and t ~= want then
    problem(key, t, command, needs, ours[key] and 'made so earlier in this step' or nil)
    return
  end
  if t == 'none' then ours[key] = true end
  vtype[key] = want
end

-- int64 as Redis parses it (string2ll): '0', or '-'? then a digit 1-9 then digits.
local MAX, MIN_MAG = '9223372036854775807', '9223372036854775808'
local function mag_cmp(x, y)
  if #x ~= #y then return #x < #y and -1 or 1 end
  if x == y then return 0 end
  return x < y and -1 or 1
end
local function is_int64(s)
  if s == '0' then return true end
  if #s > 20 or not string.find(s, '^%-?[1-9]%d*$') then return false end
  if #s < 19 then return true end
  if string.sub(s, 1, 1) == '-' then return mag_cmp(string.sub(s, 2), MIN_MAG) <= 0 end
  return mag_cmp(s, MAX) <= 0
end
local function mag_add(x, y)
  local out, carry, i, j = {}, 0, #x, #y
  while i > 0 or j > 0 or carry > 0 do
    local d = carry
    if i > 0 then d = d + string.byte(x, i) - 48 end
    if j > 0 then d = d + string.byte(y, j) - 48 end
    if d >= 10 then out[#out + 1], carry = d - 10, 1 else out[#out + 1], carry = d, 0 end
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end
local function mag_sub(x, y)  -- x >= y
  local out, borrow, i, j = {}, 0, #x, #y
  while i > 0 do
    local d = string.byte(x, i) - 48 - borrow
    if j > 0 then d = d - (string.byte(y, j) - 48) end
    if d < 0 then out[#out + 1], borrow = d + 10, 1 else out[#out + 1], borrow = d, 0 end
    i, j = i - 1, j - 1
  end
  local s = (string.gsub(string.reverse(table.concat(out)), '^0+', ''))
  if s == '' then return '0' end
  return s
end
local function signed(negative, m)
  if negative and m ~= '0' then return '-' .. m end
  return m
end
-- The exact sum of two int64 decimal strings. Below 10^15 the numbers are exact as
-- doubles (and as Lua 5.4 integers); beyond, digit by digit.
local function add(a, b)
  if #a < 16 and #b < 16 then return string.format('%.0f', tonumber(a) + tonumber(b)) end
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  local ma, mb = na and string.sub(a, 2) or a, nb and string.sub(b, 2) or b
  if na == nb then return signed(na, mag_add(ma, mb)) end
  local c = mag_cmp(ma, mb)
  if c == 0 then return '0' end
  if c > 0 then return signed(na, mag_sub(ma, mb)) end
  return signed(nb, mag_sub(mb, ma))
end

local function check_incrby(key, amount, at)
  local current = value[key]
  if current == nil then
    local t = vtype_of(key)
    if t == 'none' then
      current = '0'
    elseif t == 'string' then
      current = counter[key] or redis.call('GET', key)
    else
      problem(key, t, 'INCRBY', 'an integer string', nil)
      return
    end
  end
  if not is_int64(current) then
    local shown = string.sub(current, 1, 40)
    if #current > 40 then shown = shown .. '...' end
    problem(key, 'string', 'INCRBY', 'an integer string', 'holding "' .. shown .. '"')
    return
  end
  local sum = add(current, amount)
  if (#current > 15 or #amount > 15) and not is_int64(sum) then  -- (else |sum| < 2 * 10^15)
    problem(key, 'string', 'INCRBY', 'a sum within int64', current .. ' + ' .. amount)
    return
  end
  vtype[key], value[key], sums[at] = 'string', sum, sum
end

-- Calls apply.<op>(key, args..., position) for each op, in order.
local function walk(apply)
  local k, a = 6, first_op
  while a <= #ARGV do
    local op = ARGV[a]
    if op == 'S' then
      apply.set(KEYS[k], ARGV[a + 1], ARGV[a + 2]); k, a = k + 1, a + 3
    elseif op == 'D' then
      local n = tonumber(ARGV[a + 1])
      apply.del(k, n); k, a = k + n, a + 2
    elseif op == 'L' then
      apply.lpush(KEYS[k], ARGV[a + 1]); k, a = k + 1, a + 2
    elseif op == 'H' then
      apply.hset(KEYS[k], ARGV[a + 1], ARGV[a + 2]); k, a = k + 1, a + 3
    elseif op == 'I' then
      apply.incrby(KEYS[k], ARGV[a + 1], ARGV[a + 2], a); k, a = k + 1, a + 3
    elseif op == 'A' then
      apply.sadd(KEYS[k], ARGV[a + 1], ARGV[a + 2]); k, a = k + 1, a + 3
    elseif op == 'R' then
      apply.srem(KEYS[k], ARGV[a + 1]); k, a = k + 1, a + 2
    else
      error('commit script: unknown op ' .. tostring(op))
    end
  end
end

local st = type_of(skey)
if st ~= 'none' and st ~= 'string' then
  problem(skey, st, 'SET', 'a string', 'the state of this namespace')
end
walk({
  set = function(key, v) vtype[key], value[key], ours[key] = 'string', v, true end,
  del = function(first, n)
    for i = first, first + n - 1 do vtype[KEYS[i]], value[KEYS[i]] = 'none', nil end
  end,
  lpush = function(key) needs_type(key, 'list', 'LPUSH', 'a list') end,
  hset = function(key) needs_type(key, 'hash', 'HSET', 'a hash') end,
  incrby = function(key, amount, ttl, at) check_incrby(key, amount, at) end,
  sadd = function(key) needs_type(key, 'set', 'SADD', 'a set') end,
  srem = function(key) needs_type(key, 'set', 'SREM', 'a set') end,
})
if nrows > 0 then
  needs_type(okey, 'hash', 'HSET', 'a hash')
  needs_type(pkey, 'zset', 'ZADD', 'a sorted set')
end
if #problems > 0 then return refused() end

-- 3. The writes: nothing below can fail on what phase 2 checked. An INCRBY (and its
-- EXPIRE) is written as the SET of the sum phase 2 computed: the same value and TTL.
redis.call('SET', ckey, new_ck)
redis.call('SET', skey, state)
walk({
  set = function(key, v, ttl)
    if ttl == '0' then redis.call('SET', key, v) else redis.call('SET', key, v, 'EX', ttl) end
  end,
  del = function(first, n)
    for i = first, first + n - 1, 1000 do
      redis.call('DEL', unpack(KEYS, i, math.min(i + 999, first + n - 1)))
    end
  end,
  lpush = function(key, v) redis.call('LPUSH', key, v) end,
  hset = function(key, f, v) redis.call('HSET', key, f, v) end,
  incrby = function(key, amount, ttl, at)
    if ttl == '0' then
      redis.call('SET', key, sums[at], 'KEEPTTL')
    else
      redis.call('SET', key, sums[at], 'EX', ttl)
    end
  end,
  sadd = function(key, m, ttl)
    redis.call('SADD', key, m)
    if ttl ~= '0' then redis.call('EXPIRE', key, ttl) end
  end,
  srem = function(key, m) redis.call('SREM', key, m) end,
})
for i = first_row, first_op - 1, 3 do
  redis.call('HSET', okey, ARGV[i], ARGV[i + 1])
  redis.call('ZADD', pkey, 'NX', ARGV[i + 2], ARGV[i])
end
return {'applied'}
"""


def redis_client(url: str, connect_timeout_s: float = 5.0) -> aioredis.Redis:
    """A client for the Redis server at `url`, for the collector's own use.

    No socket read timeout: redis-py 8 arms one (5 s by default) around every reply it reads,
    which is half the client's CPU on a commit of a hundred commands. Every Redis operation
    of the collector runs under its own deadline instead (`Timeouts.redis_operation` for
    commits and start-up reads, the outbox's `redis_timeout_s`); a dead peer is noticed by
    that deadline or by TCP keepalive.
    """
    if is_sentinel_url(url):
        return sentinel_master(parse_sentinel_url(url), connect_timeout_s)
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
    )
    return client


def sentinel_master(target: SentinelTarget, connect_timeout_s: float = 5.0) -> aioredis.Redis:
    """A client for the master of `target`'s Sentinel group: redis-py's `master_for`, whose
    pool asks the Sentinels for the master's address on each new connection and drops a
    connection to a server that is no longer master (a failover is then followed by the
    next retry)."""
    sentinel = Sentinel(
        target.sentinels,
        sentinel_kwargs={"socket_connect_timeout": connect_timeout_s, "socket_timeout": 5.0},
        socket_timeout=None,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
    )
    client: aioredis.Redis = sentinel.master_for(
        target.master, db=target.db, password=target.password, username=target.username
    )
    return client


def embedded_redis(server: fakeredis.FakeServer | None = None) -> aioredis.Redis:
    """An in-process Redis (fakeredis) for replay without a server.

    Pass the same `fakeredis.FakeServer` to several calls to share one store (e.g. to
    simulate a restart); by default each call gets a fresh, empty store.
    """
    # fakeredis, given no server, makes one and keeps it for good in a class-wide map
    # (`FakeServer._servers_map`, keyed by a random host): every store ever made, with all its
    # data, stays in memory (the soak found it: RSS grew with each simulation). A server made
    # here lives as long as its clients.
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(
        server=server if server is not None else fakeredis.FakeServer(version=(7,))
    )
    return client
