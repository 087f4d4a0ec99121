"""`run`'s journal directory: rotated segments, compressed when closed, retention, resume,
and `replay DIR` giving the live run's digest; a damaged segment is named with its offset."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import pytest
import redis.asyncio as aioredis
import zstandard
from click.testing import CliRunner, Result
from test_pipeline import (
    NS,
    FlakyExecutor,
    queue,
    run_collector,
    world_and_config,
)

from seqcollector.cli import main
from seqcollector.config import ConfigError
from seqcollector.core import dump_state
from seqcollector.journal import JournalError
from seqcollector.journal_dir import (
    JournalDirSpec,
    StoreLost,
    first_head,
    head_for,
    last_seq,
    list_segments,
    read_dir,
)
from seqcollector.logs import reset_logging
from seqcollector.runtime.executor import RedisExecutor, embedded_redis
from seqcollector.runtime.layout import StoreLayout
from seqcollector.runtime.pipeline import Pipeline
from seqcollector.runtime.replay import replay_journal

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _logs_reset() -> Iterator[None]:
    """The commands run in this process configure the logs: undo it for the next tests."""
    yield
    reset_logging()


def tiny(path: Path, retain_bytes: int = 2**40) -> JournalDirSpec:
    """Segments of 10 blocks: the synthetic run of 160 blocks rotates 15 times."""
    return JournalDirSpec(path, segment_blocks=10, retain_bytes=retain_bytes)


async def cli(*args: str) -> Result:
    """The command in a worker thread (it runs its own event loop)."""
    return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(main, list(args)))


async def replayed(directory: Path) -> tuple[str, list[bytes], bytes]:
    store = embedded_redis()
    result = await replay_journal(directory, store, "replay")
    return result.digest, await queue(store), dump_state(result.state)


async def test_rotated_compressed_segments_replay_to_the_live_digest(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    executor = FlakyExecutor(redis, NS, seed=5)  # failed commits truncate the open segment
    pipeline = await run_collector(redis, spec, executor=executor)
    assert executor.failures > 5
    segs = list_segments(spec.path)
    assert len(segs) >= 10
    assert all(s.compressed for s in segs[:-1]) and not segs[-1].compressed
    assert [p.suffix for p in spec.path.iterdir()].count(".jsonl") == 1
    assert [s.base_seq for s in segs] == sorted({s.base_seq for s in segs})
    digest, replay_queue, state = await replayed(spec.path)
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == digest
    assert await queue(redis) == replay_queue and len(replay_queue) > 20
    assert state == dump_state(pipeline.state)
    # every segment starts from the state before its first input: one alone replays too
    mid = head_for(spec.path, segs[5].base_seq + 3)
    assert mid.base_seq == segs[5].base_seq
    seqs = [n for n, _ in read_dir(spec.path, from_seq=mid.base_seq)]
    assert seqs == list(range(mid.base_seq, pipeline.seq + 1))
    assert last_seq(spec.path) == pipeline.seq
    out = await cli("replay", str(spec.path), "-q")
    assert out.exit_code == 0, out.output
    assert out.output.strip().splitlines()[-1] == f"digest {digest}"
    await redis.aclose()


async def test_size_rotation_and_resume_after_a_crash(redis_url: str, tmp_path: Path) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    spec = JournalDirSpec(tmp_path / "j", segment_bytes=6000)
    first = await run_collector(redis, spec, stop_at_block=1080)
    assert len(list_segments(spec.path)) > 3
    assert first.digest is not None
    # a crash leaves lines written but never committed, and a torn last line
    open_seg = list_segments(spec.path)[-1].path
    with open_seg.open("ab") as f:
        f.write(b'{"type":"tick","now":1}\n{"type":"ti')
    second = await run_collector(redis, spec)
    kept = list(spec.path.glob("uncommitted-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b'{"type":"tick","now":1}\n'
    digest, replay_queue, _ = await replayed(spec.path)
    assert second.digest is not None and second.digest.hexdigest() == digest
    assert await queue(redis) == replay_queue
    await redis.aclose()


async def test_a_journal_that_does_not_fit_the_store_is_set_aside(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    await run_collector(redis, spec, stop_at_block=1020)
    keys = StoreLayout(NS)
    older = await redis.mget([keys.state, keys.checkpoint])
    await run_collector(redis, spec, stop_at_block=1040)
    # The store restored from an older copy: this journal goes on past it.
    await redis.mset({keys.state: older[0], keys.checkpoint: older[1]})
    pipeline = await run_collector(redis, spec)
    aside = list(spec.path.glob("set-aside-*"))
    assert len(aside) == 1 and list(aside[0].glob("seg-*"))
    digest, _, _ = await replayed(spec.path)
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == digest
    await redis.aclose()


async def test_an_empty_store_beside_a_committed_journal_is_refused(
    redis_url: str, tmp_path: Path
) -> None:
    """Redis lost everything (FLUSHALL, a restart without persistence): the directory is not
    set aside and the run does not start over from scratch (the Go collector's behaviour);
    it is refused, naming `run --recover`. A directory whose inputs never landed (a crash
    before the first commit: no `committed` marker) is a fresh start."""
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    await run_collector(redis, spec, stop_at_block=1040)
    assert (spec.path / "committed").exists()
    await redis.flushdb()
    with pytest.raises(StoreLost, match="run --recover"):
        await run_collector(redis, spec)
    assert await redis.dbsize() == 0
    assert not list(spec.path.glob("set-aside-*"))
    (spec.path / "committed").unlink()  # as if no commit had ever landed
    pipeline = await run_collector(redis, spec, stop_at_block=1010)
    assert pipeline.seq > 0
    await redis.aclose()


async def test_retention_keeps_the_open_segment_and_a_replayable_tail(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j", retain_bytes=20_000)
    pipeline = await run_collector(redis, spec)
    segs = list_segments(spec.path)
    assert segs[0].base_seq > 1  # the oldest were deleted
    assert sum(s.path.stat().st_size for s in segs[:-1]) <= 20_000
    assert first_head(spec.path).base_seq == segs[0].base_seq
    digest, _, state = await replayed(spec.path)  # from the oldest kept segment's state
    assert state == dump_state(pipeline.state)
    # the oldest kept header carries the digest chain of what was deleted
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == digest
    await redis.aclose()


async def test_retention_by_age(redis_url: str, tmp_path: Path) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    await run_collector(redis, spec, stop_at_block=1060)
    segs = list_segments(spec.path)
    old = time.time() - 31 * 86400
    for seg in segs[:3]:
        os.utime(seg.path, (old, old))
    await run_collector(redis, spec)  # resume applies retention
    assert list_segments(spec.path)[0].base_seq == segs[3].base_seq
    await redis.aclose()


async def _recorded(redis_url: str, tmp_path: Path) -> JournalDirSpec:
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    await run_collector(redis, spec)
    await redis.aclose()
    return spec


async def test_a_damaged_compressed_segment_is_named_with_its_offset(
    redis_url: str, tmp_path: Path
) -> None:
    spec = await _recorded(redis_url, tmp_path)
    seg = list_segments(spec.path)[4]
    raw = bytearray(seg.path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16
    seg.path.write_bytes(bytes(raw))
    with pytest.raises(JournalError, match=rf"{seg.path.name}: damaged zstd data after .*byte \d+"):
        list(read_dir(spec.path))
    out = await cli("replay", str(spec.path), "-q")
    assert out.exit_code == 2 and seg.path.name in out.output


async def test_a_cut_closed_segment_is_named_with_its_offset(
    redis_url: str, tmp_path: Path
) -> None:
    spec = await _recorded(redis_url, tmp_path)
    seg = list_segments(spec.path)[2]
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(seg.path.read_bytes())
    cut = len(plain) - 7
    seg.path.write_bytes(zstandard.ZstdCompressor().compress(plain[:cut]))
    start = plain.rfind(b"\n", 0, cut) + 1
    with pytest.raises(JournalError, match=rf"{seg.path.name}: byte {start}: truncated line"):
        list(read_dir(spec.path))


async def test_a_missing_segment_is_a_gap(redis_url: str, tmp_path: Path) -> None:
    spec = await _recorded(redis_url, tmp_path)
    segs = list_segments(spec.path)
    segs[3].path.unlink()
    with pytest.raises(JournalError, match=rf"{segs[4].path.name}: byte 0: starts at input"):
        list(read_dir(spec.path))


async def test_pipeline_open_with_a_directory(redis_url: str, tmp_path: Path) -> None:
    """A fresh store and an empty directory: the first segment's state is the empty one."""
    redis = aioredis.Redis.from_url(redis_url)
    _, config = world_and_config()
    spec = tiny(tmp_path / "j")
    pipeline = Pipeline(RedisExecutor(redis, NS), config, journal=spec)
    await pipeline.open()
    await pipeline.close()
    head = first_head(spec.path)
    assert head.base_seq == 1 and head.header.config == config
    await redis.aclose()


async def test_a_crash_inside_a_rotation_leaves_a_journal_that_resumes(
    redis_url: str, tmp_path: Path
) -> None:
    """Killed while writing the next segment's header (a .tmp), or between the compressed
    copy's rename and the plain one's unlink: the next start cleans up and resumes."""
    redis = aioredis.Redis.from_url(redis_url)
    spec = tiny(tmp_path / "j")
    await run_collector(redis, spec, stop_at_block=1060)
    segs = list_segments(spec.path)
    (spec.path / "seg-000000099999.jsonl.tmp").write_bytes(b'{"format":"seqcol')
    plain = zstandard.ZstdDecompressor().stream_reader(segs[1].path.open("rb")).read()
    segs[1].path.with_suffix("").write_bytes(plain)  # the plain copy, not yet unlinked
    pipeline = await run_collector(redis, spec)
    assert not list(spec.path.glob("*.tmp")) and not list(spec.path.glob("set-aside-*"))
    assert not segs[1].path.with_suffix("").exists()
    digest, _, _ = await replayed(spec.path)
    assert pipeline.digest is not None and pipeline.digest.hexdigest() == digest
    await redis.aclose()


async def test_a_journal_dir_that_cannot_be_made_names_the_setting(
    redis_url: str, tmp_path: Path
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    (tmp_path / "file").write_text("not a directory")
    _, config = world_and_config()
    pipeline = Pipeline(RedisExecutor(redis, NS), config, journal=tiny(tmp_path / "file" / "ns"))
    with pytest.raises(ConfigError, match=r"^SEQ_JOURNAL_DIR: cannot write the journal in .*off"):
        await pipeline.open()
    await redis.aclose()
