"""Issue 8: the core never raises, whatever any field of any input holds, and whatever a
journal line holds; the state it leaves can always be stored and its effects journaled.

Integers of any size (more than 4,300 digits cannot even be printed), strings of any content
(lone surrogates included, which UTF-8 cannot carry), lists of any length, on top of a
realistic chain so that the inputs reach the deep paths (open windows, pending queries).
"""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqcollector.core import (
    Block,
    Input,
    Log,
    MarketParams,
    Rewind,
    SubmissionSets,
    Tick,
    dump_state,
    load_state,
    new_state,
    step,
)
from seqcollector.core.abi import (
    BATCH_SUBMISSIONS_COMPLETED,
    DAY_STARTED,
    EPOCH_RELEASED,
    SNAPSHOT_BATCH_SUBMITTED,
)
from seqcollector.core.effects import QuerySubmissionSets
from seqcollector.core.inputs import Skipped
from seqcollector.core.state import State
from seqcollector.journal import JournalError, read_inputs
from sim.synthetic import PROTOCOL_STATE, SyntheticWorld, WorldSpec, drive

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
_enc = msgspec.json.Encoder()

# every code point, surrogates included
_chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_text = st.text(_chars, max_size=60) | st.text(_chars, min_size=4000, max_size=6000)
_ints = (
    st.integers(-(2**200), 2**200)
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([0, -1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64])
    | st.integers(4301, 5000).map(lambda digits: -(10**digits))  # too long to print
)


def _near(state: State) -> st.SearchStrategy[Input]:
    """Inputs of every type whose fields mix the state's real values with arbitrary ones."""
    head = state.head
    numbers = _ints | st.just(head.number if head else 0) | st.integers(0, 3000)
    hashes = (
        _text
        | st.just(head.hash if head else "")
        | st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
    )
    markets = _text | st.sampled_from(state.config.markets)
    queries = [q for q in _pending(state)]
    members = st.lists(
        _text
        | st.builds(
            lambda m, e, p, s: f"{m}.{e}.{p}.{s}",
            markets,
            st.integers(-5, 2**70),
            _text,
            st.integers(-5, 2**70) | _text,
        ),
        max_size=20,
    )
    topic0 = st.sampled_from(
        [EPOCH_RELEASED, SNAPSHOT_BATCH_SUBMITTED, BATCH_SUBMISSIONS_COMPLETED, DAY_STARTED]
    )
    skipped = st.lists(st.builds(Skipped, _text, _text, _text), max_size=4)
    answers = (
        st.sampled_from(queries).flatmap(
            lambda q: st.builds(
                SubmissionSets,
                st.just(q.query_id),
                st.just(q.market),
                st.just(q.epoch),
                members,
                skipped,
            )
        )
        if queries
        else st.nothing()
    )
    return st.one_of(
        st.builds(Block, numbers, hashes, hashes, numbers),
        st.builds(
            Log,
            st.just(PROTOCOL_STATE) | _text,
            st.lists(topic0 | _text, max_size=5),
            _text,
            numbers,
            hashes,
            numbers,
            _text,
        ),
        st.builds(MarketParams, markets, numbers, numbers, numbers, numbers, numbers),
        st.builds(SubmissionSets, numbers, markets, numbers, members, skipped),
        answers,
        st.builds(Rewind, numbers),
        st.builds(Tick, numbers),
    )


def _pending(state: State) -> list[QuerySubmissionSets]:
    from seqcollector.core import pending_queries

    return pending_queries(state)


@EXAMPLES
@given(st.data())
def test_no_field_of_any_input_makes_the_core_raise(data: st.DataObject) -> None:
    world = SyntheticWorld(WorldSpec(seed=data.draw(st.integers(0, 99)), blocks=40, markets=2))
    config = world.core_config(max_reorg_depth=8)
    state = new_state(config)
    inputs = list(drive(world, config))
    cut = data.draw(st.integers(0, len(inputs)))
    for inp in inputs[:cut]:
        step(state, inp)
    for _ in range(data.draw(st.integers(1, 15))):
        inp = data.draw(_near(state))
        _, effects = step(state, inp)
        _enc.encode(effects)  # journaled, digested and sent as JSON
    for inp in inputs[cut:]:  # and the chain goes on
        step(state, inp)
    load_state(dump_state(state))


_tags = st.sampled_from(["block", "log", "market_params", "submission_sets", "rewind", "tick"])
_json_values = st.recursive(
    st.none() | st.booleans() | _ints.filter(lambda n: abs(n) < 10**300) | st.floats() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=10,
)


@st.composite
def journal_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "object"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    fields = {
        "block": ["number", "hash", "parent_hash", "timestamp"],
        "log": ["address", "topics", "data", "block_number", "block_hash", "log_index"],
        "market_params": ["market", "submission_window", "day_size", "daily_quota"],
        "submission_sets": ["query_id", "market", "epoch", "members", "skipped"],
        "rewind": ["to_block"],
        "tick": ["now"],
    }
    tag = draw(_tags)
    obj: dict[str, object] = {"type": tag}
    for name in fields[tag]:
        if draw(st.booleans()) or draw(st.booleans()):
            obj[name] = draw(_json_values)
    try:
        return msgspec.json.encode(obj)
    except (UnicodeEncodeError, OverflowError):
        return b"{}"


@EXAMPLES
@given(st.lists(journal_lines(), max_size=8))
def test_arbitrary_journal_lines_are_refused_or_applied_never_raised_on(
    tmp_path_factory: object, lines: list[bytes]
) -> None:
    import tempfile
    from pathlib import Path

    world = SyntheticWorld(WorldSpec(blocks=6))
    config = world.core_config()
    state = new_state(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.jsonl"
        path.write_bytes(b'{"format":"seqcollector-journal"}\n' + b"\n".join(lines) + b"\n")
        try:
            for _, _, inp in read_inputs(path):
                _, effects = step(state, inp)
                _enc.encode(effects)
        except JournalError as exc:
            assert "j.jsonl:" in str(exc)  # names the file and the line
    load_state(dump_state(state))
