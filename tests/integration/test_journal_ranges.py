"""`replay --from-block/--to-block` and `diff JOURNAL --against REF` on the fixture journal."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from seqcollector.cli import main
from seqcollector.core import Block, dump_state
from seqcollector.journal import encode_effect
from seqcollector.logs import reset_logging
from seqcollector.runtime.diff import effects_of
from seqcollector.runtime.executor import embedded_redis
from seqcollector.runtime.replay import open_source, replay_journal

FIXTURE = Path(__file__).parents[2] / "fixtures" / "journals" / "one-market.jsonl"


@pytest.fixture(autouse=True)
def _logs_reset() -> Iterator[None]:
    """The commands run in this process configure the logs: undo it for the next tests."""
    yield
    reset_logging()


def replay(path: Path, **kw: int | None) -> tuple[str, int, bytes, list[bytes]]:
    async def go() -> tuple[str, int, bytes, list[bytes]]:
        store = embedded_redis()
        out = await replay_journal(path, store, "r", **kw)  # type: ignore[arg-type]
        queue = list(reversed(await store.lrange("finalizerQueue", 0, -1)))
        return out.digest, out.effects, dump_state(out.state), queue

    return anyio.run(go)


def first_seq_at(path: Path, block: int) -> int:
    return next(
        seq
        for seq, _, inp in open_source(path).inputs
        if isinstance(inp, Block) and inp.number >= block
    )


@pytest.mark.parametrize(("a", "b"), [(1100, 1150), (1000, 1259), (1200, None)])
def test_a_range_is_a_slice_of_the_whole_replay(a: int, b: int | None) -> None:
    whole = [encode_effect(p.effect) for p in effects_of(FIXTURE)]
    start = first_seq_at(FIXTURE, a)
    skipped = sum(1 for p in effects_of(FIXTURE) if p.seq < start)
    digest, count, state, queue = replay(FIXTURE, from_block=a, to_block=b)
    part = b"".join(line + b"\n" for line in whole[skipped : skipped + count])
    assert count > 0 and hashlib.sha256(part).hexdigest() == digest
    if b is None:  # the state rebuilt before A without effects ends where the whole replay does
        assert state == replay(FIXTURE)[2] and skipped + count == len(whole)
    pushed = [json.loads(q)["EpochID"] for q in queue]
    assert pushed == sorted(pushed) and len(queue) <= len(replay(FIXTURE)[3])


def test_replay_range_on_the_command_line() -> None:
    out = CliRunner().invoke(
        main, ["replay", str(FIXTURE), "-q", "--from-block", "1100", "--to-block", "1150"]
    )
    assert out.exit_code == 0, out.output
    assert (
        out.output.strip().splitlines()[-1]
        == f"digest {replay(FIXTURE, from_block=1100, to_block=1150)[0]}"
    )
    bad = CliRunner().invoke(main, ["replay", str(FIXTURE), "--from-block", "9", "--to-block", "3"])
    assert bad.exit_code == 2 and "--to-block 3 is below --from-block 9" in bad.output


def test_diff_of_a_journal_with_itself_is_identical() -> None:
    out = CliRunner().invoke(main, ["diff", str(FIXTURE), "--against", str(FIXTURE)])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"identical ({replay(FIXTURE)[1]} effects)"


def test_diff_under_another_configuration_names_the_input(tmp_path: Path) -> None:
    config = tmp_path / "bs2.yaml"
    config.write_text("batch_size: 2\n")
    out = CliRunner().invoke(main, ["diff", str(FIXTURE), "--against", str(config)])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert lines[0] == "the effects part after 23 identical effects"
    assert "effect #24 from input seq 23 (SubmissionSets, block 1016, market 0xddea" in lines[1]
    assert "epoch 1)" in lines[1] and "(BATCH_SIZE)" in out.output
    empty = tmp_path / "none.yaml"
    empty.write_text("log_level: debug\n")
    refused = CliRunner().invoke(main, ["diff", str(FIXTURE), "--against", str(empty)])
    assert refused.exit_code == 2 and "sets no core setting" in refused.output


def test_diff_of_two_journals_shows_where_they_part(tmp_path: Path) -> None:
    """A second recording where one submission set lost a member."""
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"submission_sets"' in line and i > 100)
    changed = json.loads(lines[at])
    changed["members"] = changed["members"][1:]
    other = tmp_path / "other.jsonl"
    other.write_bytes(
        b"".join([*lines[:at], json.dumps(changed).encode() + b"\n", *lines[at + 1 :]])
    )
    out = CliRunner().invoke(main, ["diff", str(FIXTURE), "--against", str(other)])
    assert out.exit_code == 1, out.output
    assert f"input seq {at} (SubmissionSets" in out.output
    assert f"epoch {changed['epoch']})" in out.output
    short = tmp_path / "short.jsonl"
    short.write_bytes(b"".join(lines[:at]))
    cut = CliRunner().invoke(main, ["diff", str(FIXTURE), "--against", str(short)])
    assert cut.exit_code == 1 and f"{short}: ends after" in cut.output


def test_record_refuses_a_range_upside_down() -> None:
    out = CliRunner().invoke(main, ["record", "--from-block", "9", "--to-block", "3"])
    assert out.exit_code == 2 and "--to-block 3 is below --from-block 9" in out.output
