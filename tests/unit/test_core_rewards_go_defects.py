"""Go rewards defects R5, R6 and R7 (go-rewards-api.md 1.6) at the core level: each test
fails on the Go collector's behaviour and passes on ours."""

from __future__ import annotations

from corekit import MARKET, block, config, day_started, epoch_released
from rewardkit import QUERIES, World, reward_calls

from seqcollector.core import Input, MarketParams, new_state, step
from seqcollector.core.effects import (
    DeleteKeys,
    Effect,
    Query,
    RelayerCall,
    SetAdd,
    SetRemove,
    SetValue,
)
from seqcollector.core.inputs import Log, SubmissionSets
from seqcollector.core.invariants import check
from seqcollector.core.state import State

LC = MARKET.lower()
MARKER_SET = f"DayRolloverEpochMarkerSetKey.{LC}"


def world() -> World:
    w = World(total_nodes=6)
    for day in (1, 2, 3):
        w.sets[day] = [5, 2, 4, 1]
        w.counts.update({(day, s): 10 * day + s for s in (1, 2, 4, 5)})
    return w


def start(params: MarketParams | None = None, **kw: object) -> State:
    state = new_state(config(rewards=True, **kw))
    step(state, params or MarketParams(MARKET, 6, 864_000_000, 1000, 10, 1))
    step(state, block(100))
    return state


def run_steps(
    state: State, w: World, last: int, days: dict[int, int], first: int = 101
) -> list[tuple[Input, list[Effect]]]:
    """Blocks first..last as `rewardkit.chain` (an epoch released every odd block, the day
    starts of `days`), every query answered; -> (input, effects) of every step, in order."""
    steps: list[tuple[Input, list[Effect]]] = []

    def feed(inp: Input) -> None:
        queue: list[Input | Query] = [inp]
        while queue:
            item = queue.pop(0)
            fed = w.answer(item) if isinstance(item, QUERIES) else item
            effects = step(state, fed)[1]
            check(state)
            steps.append((fed, effects))
            queue[0:0] = [e for e in effects if isinstance(e, QUERIES)]

    for n in range(first, last + 1):
        feed(block(n))
        if n in days:
            feed(day_started(n, days[n]))
        if n % 2 == 1:
            feed(epoch_released(n, (n - 99) // 2))
    return steps


def batch_preparations(steps: list[tuple[Input, list[Effect]]]) -> list[list[Effect]]:
    """The effects of each step that batched an epoch (the answer to its submission sets)."""
    return [
        out
        for inp, out in steps
        if isinstance(inp, SubmissionSets)
        and any(isinstance(e, SetValue) and e.key.startswith("BatchCountKey.") for e in out)
    ]


def test_r6_one_marker_and_one_final_update_however_many_batch_preparations_follow() -> None:
    """R6: Go advances LastKnownDay only after HGET DaySizeTableKey and GET EpochsInADay
    succeed (1.4 step 3); when they fail, every later batch preparation sees the old day
    again: a new marker every epoch and the final update sent again and again. The market
    here has neither a day size nor epochs in a day (both 0): ours makes one marker for the
    day left behind and one final update, over 70 batch preparations after the change."""
    state = start(MarketParams(MARKET, 6, 0, 1000, 0, 1), rewards_update_epoch_interval=1000)
    steps = run_steps(state, world(), 260, days={111: 2})
    effects = [e for _, out in steps for e in out]
    markers = [e for e in effects if isinstance(e, SetAdd) and e.key == MARKER_SET]
    preparations = batch_preparations(steps)
    marked_at = next(i for i, out in enumerate(preparations) if markers[0] in out)
    assert len(preparations) - marked_at > 70
    assert len(markers) == 1  # Go: one per epoch while step 3 keeps failing
    details = [e for e in effects if isinstance(e, SetValue) and "MarkerDetails" in e.key]
    assert len(details) == 1 and '"LastKnownDay":"1"' in details[0].value
    last_known = [
        e.value for e in effects if isinstance(e, SetValue) and e.key == f"LastKnownDayKey.{LC}"
    ]
    assert last_known == ["1", "2"]  # moved on at once, written once per day
    finals = [c for c in reward_calls(effects) if c.id.startswith("rewards-final:")]
    assert [c.id for c in finals] == [f"rewards-final:{LC}:1:0"]  # Go: sent again each epoch
    assert finals[0].body["slotIDs"] == [1, 2, 4, 5]
    assert [e for e in effects if isinstance(e, SetRemove)] == [
        SetRemove(MARKER_SET, markers[0].member)
    ]
    assert not state.days[LC].markers and state.days[LC].fired == [1]


def test_r7_current_day_key_written_from_the_chain_only_without_a_ttl() -> None:
    """R7: at every batch preparation Go re-writes `CurrentDayKey.<lc>` with the day it read,
    TTL = (DAY_SIZE read as microseconds / K) x (E mod K) - 10 s: 864 s x elapsed epochs, or
    no TTL at all early in a day, and a stale day persists. Ours writes it only when a
    DayStartedEvent arrives, with the chain's day and no TTL, and never at batch
    preparation."""
    state = start(rewards_update_epoch_interval=3, past_days_buffer=2)
    steps = run_steps(state, world(), 200, days={111: 2, 151: 3})
    key = f"CurrentDayKey.{LC}"
    preparations = batch_preparations(steps)
    assert len(preparations) > 40
    for out in preparations:
        assert not [e for e in out if isinstance(e, SetValue) and e.key == key], out
    writes = [
        (inp, e) for inp, out in steps for e in out if isinstance(e, SetValue) and e.key == key
    ]
    assert [e for _, e in writes] == [SetValue(key, "2", None), SetValue(key, "3", None)]
    assert all(isinstance(inp, Log) and inp.block_number in (111, 151) for inp, _ in writes)


def test_r5_marker_removed_in_the_step_that_puts_the_final_update_in_the_outbox() -> None:
    """R5: Go SREMs the marker (and EXPIREs its details) right after starting the chunks'
    goroutines, before any is sent, and a failed chunk is never resent: the day's final
    update can be lost with no marker left to retry it. Ours removes the marker (SREM of the
    set member, DEL of the details key) in the very step whose effects hold the final
    update's RelayerCalls, committed with them in one transaction (the outbox then delivers
    them at least once); no earlier step touches the marker."""
    state = start(rewards_update_epoch_interval=1000, rewards_update_batch_size=3)
    steps = run_steps(state, world(), 160, days={111: 2})
    added = [
        (i, e)
        for i, (_, out) in enumerate(steps)
        for e in out
        if isinstance(e, SetAdd) and e.key == MARKER_SET
    ]
    assert len(added) == 1
    marker_epoch = added[0][1].member
    removal = [
        SetRemove(MARKER_SET, marker_epoch),
        DeleteKeys([f"DayRolloverEpochMarkerDetailsKey.{LC}.{marker_epoch}"]),
    ]
    touched = [
        i
        for i, (_, out) in enumerate(steps)
        if any(e in out for e in removal)
        or any(isinstance(e, (SetRemove, DeleteKeys)) and "Rollover" in str(e) for e in out)
    ]
    with_finals = [
        i
        for i, (_, out) in enumerate(steps)
        if any(isinstance(e, RelayerCall) and e.id.startswith("rewards-final:") for e in out)
    ]
    assert len(with_finals) == 1 and touched == with_finals  # the same step, never before
    out = steps[with_finals[0]][1]
    assert all(e in out for e in removal)
    finals = [e for e in out if isinstance(e, RelayerCall) and e.id.startswith("rewards-final:")]
    assert [c.body["slotIDs"] for c in finals] == [[1, 2, 4], [5]]  # every chunk, one step
    assert added[0][0] < with_finals[0]
