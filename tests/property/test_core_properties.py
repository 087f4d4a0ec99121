"""Property tests of the core (hypothesis): determinism, never-raise, crash equivalence."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, event, given, settings
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
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Effect, Rejected
from seqcollector.core.state import EmittedEpochs
from sim.synthetic import PROTOCOL_STATE, SyntheticWorld, WorldSpec, drive

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_enc = msgspec.json.Encoder()


@st.composite
def world_inputs(draw: st.DrawFn) -> tuple[CoreConfig, list[Input]]:
    """A synthetic chain with reorgs, answered queries, noise, and some garbage inputs."""
    blocks = draw(st.integers(12, 70))
    first = 1000
    reorgs = draw(
        st.dictionaries(st.integers(first + 9, first + blocks - 1), st.integers(1, 8), max_size=3)
    )
    spec = WorldSpec(
        seed=draw(st.integers(0, 2**32)),
        markets=draw(st.integers(1, 3)),
        blocks=blocks,
        first_block=first,
        epoch_every=draw(st.integers(1, 12)),
        window_s=draw(st.sampled_from([0, 2, 6, 30])),
        projects=draw(st.integers(1, 5)),
        slots=draw(st.integers(1, 6)),
        epochs_in_a_day=draw(st.integers(2, 5)),
        reorgs=tuple(sorted(reorgs.items())),
    )
    world = SyntheticWorld(spec)
    config = world.core_config(
        batch_size=draw(st.integers(1, 4)),
        max_reorg_depth=draw(st.integers(2, 10)),
        attestor_queue_push_enabled=draw(st.booleans()),
    )
    inputs = list(drive(world, config))
    for _ in range(draw(st.integers(0, 5))):
        inputs.insert(draw(st.integers(0, len(inputs))), draw(garbage_inputs(config)))
    return config, inputs


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


@st.composite
def garbage_inputs(draw: st.DrawFn, config: CoreConfig) -> Input:
    ints = st.integers(-(2**70), 2**70) | st.integers(0, 2000)
    text = st.text(max_size=80)
    hashes = st.binary(min_size=32, max_size=32).map(_hex) | text
    markets = st.sampled_from(config.markets) | text
    topic0 = st.sampled_from(
        [EPOCH_RELEASED, SNAPSHOT_BATCH_SUBMITTED, BATCH_SUBMISSIONS_COMPLETED, DAY_STARTED]
    )
    topic = st.binary(max_size=40).map(_hex) | text | topic0
    kind = draw(st.sampled_from(["log", "block", "params", "sets", "rewind", "tick"]))
    if kind == "log":
        topics = draw(st.lists(topic, max_size=5))
        data = draw(st.binary(max_size=200).map(_hex) | text)
        address = draw(st.just(PROTOCOL_STATE) | text)
        return Log(address, topics, data, draw(ints), draw(hashes), draw(ints))
    if kind == "block":
        return Block(draw(ints), draw(hashes), draw(hashes), draw(ints))
    if kind == "params":
        return MarketParams(draw(markets), *(draw(ints) for _ in range(5)))
    if kind == "sets":
        members = draw(st.lists(text, max_size=5))
        return SubmissionSets(draw(ints), draw(markets), draw(ints), members)
    if kind == "rewind":
        return Rewind(draw(ints))
    return Tick(draw(ints))


def effects_of(config: CoreConfig, inputs: list[Input]) -> bytes:
    state = new_state(config)
    out: list[Effect] = []
    for inp in inputs:
        out.extend(step(state, inp)[1])
    return b"\n".join(_enc.encode(e) for e in out)


@EXAMPLES
@given(world_inputs())
def test_same_inputs_give_byte_identical_effects(case: tuple[CoreConfig, list[Input]]) -> None:
    config, inputs = case
    assert effects_of(config, inputs) == effects_of(config, list(inputs))


@EXAMPLES
@given(world_inputs(), st.data())
def test_cut_serialize_load_continue_equals_one_run(
    case: tuple[CoreConfig, list[Input]], data: st.DataObject
) -> None:
    config, inputs = case
    cut = data.draw(st.integers(0, len(inputs)))
    state = new_state(config)
    out: list[Effect] = []
    for inp in inputs[:cut]:
        out.extend(step(state, inp)[1])
    state = load_state(dump_state(state))  # the crash: only the serialized state survives
    for inp in inputs[cut:]:
        out.extend(step(state, inp)[1])
    assert b"\n".join(_enc.encode(e) for e in out) == effects_of(config, inputs)


@EXAMPLES
@given(st.data())
def test_arbitrary_topics_and_data_never_raise(data: st.DataObject) -> None:
    world = SyntheticWorld(WorldSpec(blocks=3))
    config = world.core_config()
    state = new_state(config)
    for inp in drive(world, config):
        step(state, inp)
    head = state.head
    assert head is not None
    for _ in range(data.draw(st.integers(1, 10))):
        topics = data.draw(
            st.lists(
                st.sampled_from([EPOCH_RELEASED, DAY_STARTED, SNAPSHOT_BATCH_SUBMITTED])
                | st.binary(max_size=64).map(_hex),
                max_size=5,
            )
        )
        raw = data.draw(st.binary(max_size=300))
        log = Log(PROTOCOL_STATE, topics, _hex(raw), head.number, head.hash, 0)
        _, effects = step(state, log)
        _enc.encode(effects)
    for _ in range(data.draw(st.integers(0, 10))):
        step(state, data.draw(garbage_inputs(config)))
    load_state(dump_state(state))  # still serializable


def _batch_submitted_log(data: bytes) -> Log:
    topics = [SNAPSHOT_BATCH_SUBMITTED, "0x" + "00" * 12 + "ab" * 20, "0x" + "00" * 31 + "07"]
    return Log(PROTOCOL_STATE, topics, _hex(data), 0, "0x" + "00" * 32, 0)


@EXAMPLES
@given(st.text(max_size=100), st.integers(0, 2**256 - 1), st.binary(max_size=200))
def test_hand_decoding_of_string_uint_agrees_with_eth_abi(
    cid: str, timestamp: int, noise: bytes
) -> None:
    """eth_abi is the oracle for SnapshotBatchSubmitted's (string, uint256) data."""
    from eth_abi.abi import decode, encode

    from seqcollector.core.abi import Refusal, SnapshotBatchSubmitted, decode_event

    log = _batch_submitted_log(encode(["string", "uint256"], [cid, timestamp]))
    event = decode_event(log.topics, log.data)
    assert isinstance(event, SnapshotBatchSubmitted)
    assert (event.batch_cid, event.timestamp, event.epoch) == (cid, timestamp, 7)
    for data in (noise, encode(["string", "uint256"], [cid, timestamp])[: len(noise)]):
        ours = decode_event(_batch_submitted_log(data).topics, _hex(data))
        if not isinstance(ours, Refusal):  # whatever we accept, eth_abi decodes the same way
            assert decode(["string", "uint256"], data, strict=True) == (
                ours.batch_cid,
                ours.timestamp,
            )


@EXAMPLES
@given(world_inputs())
def test_rewind_restores_the_domain_as_of_its_block(case: tuple[CoreConfig, list[Input]]) -> None:
    """After Rewind(b), windows, days and pending queries equal what they were when the
    chain's head was b (the last time, on the branch being kept)."""
    from seqcollector.core.state import dump_domain, load_domain

    def epoch_in(emitted: EmittedEpochs, epoch: int) -> bool:
        return epoch <= emitted.floor or epoch in emitted.epochs

    config, inputs = case
    state = new_state(config)
    as_of: dict[int, bytes] = {}
    for inp in inputs:
        head_before = state.head
        _, effects = step(state, inp)
        too_deep = any(isinstance(e, Rejected) and e.reason == "reorg_too_deep" for e in effects)
        if (
            isinstance(inp, Rewind)
            and head_before is not None
            and inp.to_block < head_before.number
            and inp.to_block in as_of
            and not too_deep
        ):
            event("rewind checked")
            expected = load_domain(as_of[inp.to_block])
            for lc, ms in expected.markets.items():  # minus what was batched since: not again
                emitted = state.emitted.get(lc)
                for epoch in [e for e in ms.windows if emitted and epoch_in(emitted, e)]:
                    del ms.windows[epoch]
                    for qid in [
                        i for i, q in expected.queries.items() if (q.market, q.epoch) == (lc, epoch)
                    ]:
                        del expected.queries[qid]
            assert dump_domain(state.domain) == dump_domain(expected)
        if isinstance(inp, Rewind):  # what was recorded above it belongs to an orphaned branch
            as_of = {n: d for n, d in as_of.items() if n <= inp.to_block}
        if state.head is not None:
            as_of[state.head.number] = dump_domain(state.domain)
