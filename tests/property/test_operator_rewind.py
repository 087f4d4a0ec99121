"""`core.rewinds.rewind_to` (the operator's `seqcollector rewind --to-block N`) on random
chains with reorgs: within the retained history it gives the domain the core had after
block N, less the windows of epochs batched since (never batched again), and the reorg's
key deletions; anywhere else it refuses and leaves the state untouched; and it reaches
MAX_REORG_DEPTH back once that many blocks were processed."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from seqcollector.core import Input, Rewind, dump_state, load_state, new_state, step
from seqcollector.core import keys as core_keys
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import DeleteKeys
from seqcollector.core.rewinds import (
    RewindRefusal,
    batched_above,
    oldest_rewind_block,
    rewind_to,
)
from seqcollector.core.state import Domain, State, dump_domain, load_domain
from sim.synthetic import SyntheticWorld, WorldSpec, drive

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chains(draw: st.DrawFn) -> tuple[CoreConfig, list[Input], int]:
    """A synthetic chain (reorgs, some deeper than MAX_REORG_DEPTH) and where to stop it."""
    blocks = draw(st.integers(12, 90))
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
        max_reorg_depth=draw(st.integers(1, 12)),
        emitted_epochs_kept=draw(st.sampled_from([2, 4096])),
    )
    inputs = list(drive(world, config))
    return config, inputs, draw(st.integers(len(inputs) // 4 + 1, len(inputs)))


def expected_domain(as_of: bytes, state: State) -> Domain:
    """The domain after block N less the windows (and queries) of epochs batched since."""
    domain = load_domain(as_of)
    for lc, ms in domain.markets.items():
        emitted = state.emitted.get(lc)
        for epoch in [
            e for e in ms.windows if emitted and (e <= emitted.floor or e in emitted.epochs)
        ]:
            del ms.windows[epoch]
            for qid in [i for i, q in domain.queries.items() if (q.market, q.epoch) == (lc, epoch)]:
                del domain.queries[qid]
    return domain


@EXAMPLES
@given(chains())
def test_rewind_to_restores_the_domain_after_block_n_or_refuses(
    case: tuple[CoreConfig, list[Input], int],
) -> None:
    config, inputs, stop = case
    state = new_state(config)
    as_of: dict[int, bytes] = {}  # block -> the domain after it (and its logs, answers)
    first_processed: int | None = None
    for inp in inputs[:stop]:
        step(state, inp)
        if isinstance(inp, Rewind):  # what was recorded above it is of an orphaned branch
            as_of = {n: d for n, d in as_of.items() if n <= inp.to_block}
        if state.head is not None:
            as_of[state.head.number] = dump_domain(state.domain)
            first_processed = state.head.number if first_processed is None else first_processed
    held = dump_state(state)
    head = state.head
    oldest = oldest_rewind_block(state)
    if (
        head is not None
        and first_processed is not None
        and not state.counters.get("reorg_too_deep")
    ):
        # the history reaches MAX_REORG_DEPTH back, or to the first block processed
        reach = max(head.number - config.max_reorg_depth, first_processed)
        assert oldest == (reach if reach < head.number else None)
    top = head.number if head else 1010
    for n in range(top - config.max_reorg_depth - 3, top + 2):
        copy = load_state(held)
        batched = batched_above(copy, n)
        result = rewind_to(copy, n)
        if isinstance(result, RewindRefusal):
            event(f"refused: {result.reason}")
            assert dump_state(copy) == held  # untouched
            assert result.oldest == oldest
            within = head is not None and oldest is not None and oldest <= n < head.number
            assert not within, (n, oldest, head)
            continue
        event("rewound")
        assert head is not None and oldest is not None and oldest <= n < head.number
        assert copy.head is not None and copy.head.number == n
        assert dump_domain(copy.domain) == dump_domain(expected_domain(as_of[n], copy))
        deleted = [k for e in result if isinstance(e, DeleteKeys) for k in e.keys]
        assert deleted == [core_keys.block_hash(b) for b in range(n + 1, head.number + 1)]
        # history is not rewound: batched epochs stay batched, days stay decided
        before = load_state(held)
        assert copy.emitted == before.emitted and copy.days == before.days
        for lc, epochs in batched.items():  # and none of them has a window again
            assert not set(epochs) & set(copy.domain.markets[lc].windows)
