"""`seqcollector rewind` (runtime.rewind) on a real redis-server, over states the live
pipeline stored from the synthetic chain: the state as of block N (against a second run
stopped at N, in another database), the keys of the blocks above N deleted as after a reorg,
batched epochs never batched again when the collector continues over the same chain or a
reorged one, the refusals (beyond the history, not below the head, no state, a live
holder), a dry run that writes nothing; and `keep_alive`, the liveness mark."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from rewindkit import (
    HEAD,
    MAX_DEPTH,
    NS,
    TO,
    batch_ids,
    checkpoint_block,
    from_block,
    from_rewind,
    queue,
    run,
    spec,
    stored_state,
    values,
)

from seqcollector.core import history
from seqcollector.core.state import State, dump_domain
from seqcollector.runtime import rewind as rewind_module
from seqcollector.runtime.alive import alive_key, holder, keep_alive
from seqcollector.runtime.cleanup import NoStoredState
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.lease import Lease
from seqcollector.runtime.pipeline import ResumeError
from seqcollector.runtime.replay import replay_journal
from seqcollector.runtime.rewind import NamespaceHeld, RewindRefused, rewind_namespace
from sim.synthetic import SyntheticWorld

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def other_db(redis_url: str) -> str:
    assert redis_url.endswith("/0")
    return redis_url[:-1] + "1"  # the twin run's world: the same server, database 1


def without_batched(domain_of: State, rewound: State) -> bytes:
    """`domain_of`'s domain less the windows (and queries) of epochs `rewound` holds as
    batched: what a rewind to its block gives."""
    domain = domain_of.domain
    for lc, ms in domain.markets.items():
        for epoch in [e for e in ms.windows if history.is_emitted(rewound, lc, e)]:
            del ms.windows[epoch]
            for qid in [i for i, q in domain.queries.items() if (q.market, q.epoch) == (lc, epoch)]:
                del domain.queries[qid]
    return dump_domain(domain)


async def test_rewind_restores_the_state_as_of_n_and_deletes_the_keys_above(
    redis_url: str,
) -> None:
    redis, twin = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(other_db(redis_url))
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    before = await stored_state(redis)
    batches_before = await values(redis, "BatchCountKey.*")
    slots_before = await values(redis, "SlotSubmissionsKey.*")
    report = await rewind_namespace(redis, NS, TO)
    await run(twin, SyntheticWorld(spec()), stop_at=TO)
    rewound, at_n = await stored_state(redis), await stored_state(twin)

    assert rewound.head == at_n.head and rewound.head is not None and rewound.head.number == TO
    assert await checkpoint_block(redis) == TO
    assert dump_domain(rewound.domain) == without_batched(at_n, rewound)
    assert rewound.blocks == at_n.blocks[-len(rewound.blocks) :]
    # the keys of the blocks above N are gone, as after a reorg; those up to N are N's
    assert await values(redis, "BlockHashByNumberKey.*") == await values(
        twin, "BlockHashByNumberKey.*"
    )
    # history is not rewound: the batches of epochs batched above N stay, days stay decided
    assert await values(redis, "BatchCountKey.*") == batches_before
    assert await values(redis, "SlotSubmissionsKey.*") == slots_before
    assert rewound.emitted == before.emitted and rewound.days == before.days

    assert (report.from_block, report.to_block, report.resume_from) == (HEAD, TO, TO + 1)
    assert report.keys_deleted == report.keys_named == {"BlockHashByNumberKey": HEAD - TO}
    kept = {(m.market.lower(), e) for m in report.markets for e in m.kept_batched}
    dropped = [e for m in report.markets for e in m.dropped]
    assert kept and dropped
    for lc, epoch in kept:  # batched above N: batched they stay
        assert history.is_emitted(rewound, lc, epoch)
        assert f"BatchCountKey.{lc}.{epoch}".encode() in batches_before
    # no dispatcher ran: every submitBatchSize is pending, those of the kept epochs kept too
    assert report.outbox_cancelled == 0 and report.outbox_of_batched_above >= len(kept)
    assert report.outbox_pending == await redis.zcard(StoreLayout(NS).outbox_pending)
    await redis.aclose()
    await twin.aclose()


async def test_continuing_over_the_same_chain_batches_nothing_twice(redis_url: str) -> None:
    redis, twin = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(other_db(redis_url))
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    await rewind_namespace(redis, NS, TO)
    await run(redis, SyntheticWorld(spec()), start=from_block(TO + 1))  # `run` resumes at N+1
    await run(twin, SyntheticWorld(spec()))  # the same chain without the rewind

    items = await queue(redis)
    assert len(set(batch_ids(items))) == len(items) > 40  # no batch pushed twice
    assert items == await queue(twin)
    for pattern in ("BatchCountKey.*", "SlotSubmissionsKey.*", "BlockHashByNumberKey.*"):
        assert await values(redis, pattern) == await values(twin, pattern), pattern
    outbox = StoreLayout(NS).outbox  # one submitBatchSize per epoch, as without the rewind
    assert sorted(await redis.hkeys(outbox)) == sorted(await twin.hkeys(outbox))
    resumed = await stored_state(redis)
    assert resumed.counters["epoch_already_batched"] > 0  # the releases above N, refused
    await redis.aclose()
    await twin.aclose()


async def test_continuing_over_a_reorged_chain_is_the_run_that_saw_the_reorg(
    redis_url: str,
) -> None:
    """The chain replaces the blocks above N: rewinding to N and going on over the new
    branch ends where a collector that saw the reorg (common ancestor N) ends."""
    redis, twin = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(other_db(redis_url))
    await run(redis, SyntheticWorld(spec(reorg_after_head=True)), stop_at=HEAD)
    await rewind_namespace(redis, NS, TO)
    await run(redis, SyntheticWorld(spec(reorg_after_head=True)), start=from_rewind)
    await run(twin, SyntheticWorld(spec(reorg_after_head=True)))

    items = await queue(redis)
    assert len(set(batch_ids(items))) == len(items) > 40
    assert items == await queue(twin)
    for pattern in ("BatchCountKey.*", "BlockHashByNumberKey.*"):
        assert await values(redis, pattern) == await values(twin, pattern), pattern
    mine, theirs = await stored_state(redis), await stored_state(twin)
    assert dump_domain(mine.domain) == dump_domain(theirs.domain)
    assert mine.blocks == theirs.blocks and mine.emitted == theirs.emitted
    await redis.aclose()
    await twin.aclose()


async def test_a_recorded_namespace_rewound_with_its_journal_records_on(
    redis_url: str, tmp_path: Path
) -> None:
    """`--record JOURNAL` appends the rewind to the run's journal: `run --record` resumes
    it, and the journal replays to what the runs applied. Without it, `run --record`
    refuses to resume (the journal ends before the rewind)."""
    redis, twin = aioredis.Redis.from_url(redis_url), aioredis.Redis.from_url(other_db(redis_url))
    journal = tmp_path / "run.jsonl"
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD, journal=journal)
    report = await rewind_namespace(redis, NS, TO, journal=journal)
    assert report.journal == str(journal)
    last = journal.read_bytes().splitlines()[-1]
    assert json.loads(last) == {"type": "rewind", "to_block": TO}
    resumed = await run(redis, SyntheticWorld(spec()), start=from_block(TO + 1), journal=journal)
    assert resumed.digest is not None
    store = embedded_redis()
    replayed = await replay_journal(journal, store, "replay")
    assert replayed.digest == resumed.digest.hexdigest()
    assert await queue(store) == await queue(redis)

    other = tmp_path / "other.jsonl"
    await run(twin, SyntheticWorld(spec()), stop_at=HEAD, journal=other)
    await rewind_namespace(twin, NS, TO)  # no journal given
    with pytest.raises(ResumeError, match="replays to another state"):
        await run(twin, SyntheticWorld(spec()), start=from_block(TO + 1), journal=other)
    await redis.aclose()
    await twin.aclose()


async def stored_bytes(redis: aioredis.Redis) -> dict[bytes, bytes | None]:
    layout = StoreLayout(NS)
    # the fencing token counter moves whenever the rewind takes the lease (runtime.lease)
    found = {
        k: await redis.dump(k)
        for k in sorted(await redis.keys("*"))
        if k != b"finalizerQueue" and not k.endswith(b":lease:token")
    }
    found[b"queue"] = json.dumps([i.decode() for i in await queue(redis)]).encode()
    found[b"state"] = await redis.get(layout.state)
    return found


async def test_refusals_write_nothing_and_say_how_far_back(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    held = await stored_bytes(redis)
    oldest = HEAD - MAX_DEPTH
    with pytest.raises(RewindRefused) as beyond:
        await rewind_namespace(redis, NS, oldest - 1)
    assert f"the oldest block it can rewind to is {oldest}" in str(beyond.value)
    assert "beyond the retained history" in str(beyond.value)
    for n in (HEAD, HEAD + 5):
        with pytest.raises(RewindRefused, match=f"not below the committed block {HEAD}"):
            await rewind_namespace(redis, NS, n)
    with pytest.raises(NoStoredState, match="'elsewhere' holds no stored state"):
        await rewind_namespace(redis, "elsewhere", TO)
    assert await stored_bytes(redis) == held
    dry = await rewind_namespace(redis, NS, oldest, dry_run=True)  # the oldest: accepted
    assert dry.keys_named == {"BlockHashByNumberKey": MAX_DEPTH}
    assert await stored_bytes(redis) == held
    await redis.aclose()


async def test_dry_run_writes_nothing_and_reports_what_the_rewind_does(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    held = await stored_bytes(redis)
    dry = await rewind_namespace(redis, NS, TO, dry_run=True)
    assert await stored_bytes(redis) == held
    done = await rewind_namespace(redis, NS, TO)
    assert dry.dry_run and not done.dry_run
    assert msgspec.structs.replace(dry, dry_run=False) == done
    await redis.aclose()


async def test_a_live_holder_is_refused_by_name_until_it_stops(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    held = await stored_bytes(redis)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(keep_alive, redis, NS, renew_s=0.05))
        with anyio.fail_after(10):
            while await holder(redis, NS) is None:
                await anyio.sleep(0.01)
        with pytest.raises(NamespaceHeld) as refused:
            await rewind_namespace(redis, NS, TO)
        tg.cancel_scope.cancel()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "SIGTERM" in message
    assert f"key {NS}:alive" in message and "nothing was rewound" in message
    held.pop(alive_key(NS).encode(), None)
    assert await stored_bytes(redis) == held
    assert await holder(redis, NS) is None  # deleted when it stopped
    done = await rewind_namespace(redis, NS, TO)
    assert done.to_block == TO
    await redis.aclose()


async def test_a_live_lease_holder_is_refused_and_the_rewind_takes_the_lease(
    redis_url: str,
) -> None:
    """Active/standby: refused while another process holds `<ns>:lease`; once it is free
    the rewind takes the lease for its commit (fenced) and releases it."""
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    held = await stored_bytes(redis)
    active = Lease(redis, NS, ttl_s=30, holder="box:7:beef")
    await active.acquire()
    for dry_run in (True, False):
        with pytest.raises(NamespaceHeld) as refused:
            await rewind_namespace(redis, NS, TO, dry_run=dry_run)
        message = str(refused.value)
        assert f"lease {NS}:lease held by box:7:beef, token 1" in message
        assert "nothing was rewound" in message and "standby" in message
    now = await stored_bytes(redis)
    now.pop(StoreLayout(NS).lease.encode())
    assert now == held
    await active.release()
    done = await rewind_namespace(redis, NS, TO)
    assert done.to_block == TO
    assert await redis.get(StoreLayout(NS).lease) is None  # released
    assert await redis.get(StoreLayout(NS).lease_token) == b"2"  # it took the lease once
    await redis.aclose()


async def test_a_collector_committing_meanwhile_makes_the_rewind_write_nothing(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector started without the mark yet (its start-up) commits between the rewind's
    read and its commit: the checkpoint check refuses the rewind whole."""
    redis = aioredis.Redis.from_url(redis_url)
    await run(redis, SyntheticWorld(spec()), stop_at=HEAD)
    read_keys = rewind_module._present

    async def a_commit_lands_meanwhile(*args: Any) -> list[str]:
        other = RedisExecutor(aioredis.Redis.from_url(redis_url), NS)
        raw, checkpoint = await other.load()
        assert raw is not None and checkpoint is not None
        await other.commit(checkpoint.seq + 1, checkpoint.block, [], raw)
        await other.redis.aclose()
        return await read_keys(*args)

    monkeypatch.setattr(rewind_module, "_present", a_commit_lands_meanwhile)
    held = await stored_bytes(redis)
    with pytest.raises(NamespaceHeld, match="a collector committed while the rewind"):
        await rewind_namespace(redis, NS, TO)
    now = await stored_bytes(redis)
    assert now.pop(StoreLayout(NS).checkpoint.encode()) != held.pop(
        StoreLayout(NS).checkpoint.encode()
    )
    assert now == held  # the other commit's checkpoint, nothing of the rewind
    assert await checkpoint_block(redis) == HEAD
    await redis.aclose()


async def test_keep_alive_sets_a_ttl_renews_it_and_deletes_it_on_exit(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    key = alive_key("ka")
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(keep_alive, redis, "ka", renew_s=0.05))
        with anyio.fail_after(10):
            while not await redis.exists(key):
                await anyio.sleep(0.01)
        mark = await holder(redis, "ka")
        assert mark is not None and mark["pid"] == os.getpid() and mark["host"]
        assert "T" in mark["started"]
        assert 0 < await redis.ttl(key) <= 15
        await redis.pexpire(key, 1000)  # renewal gives the full TTL back
        with anyio.fail_after(10):
            while await redis.pttl(key) <= 2000:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert not await redis.exists(key)  # deleted on exit
    # on exit it deletes only its own mark (another process may have taken the namespace)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(keep_alive, redis, "ka", renew_s=30))
        with anyio.fail_after(10):
            while not await redis.exists(key):
                await anyio.sleep(0.01)
        await redis.set(key, b'{"host":"other","pid":1,"started":"x"}', ex=15)
        tg.cancel_scope.cancel()
    assert await holder(redis, "ka") == {"host": "other", "pid": 1, "started": "x"}
    await redis.aclose()
