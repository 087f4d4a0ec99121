"""Days, rollover markers and reward updates in the core (`core.days`, `core.rewards`), each
Go defect it fixes (R1-R9 of go-rewards-api.md) named where a test fails on Go's behaviour."""

from __future__ import annotations

import json

from corekit import MARKET, block, of, step
from rewardkit import World, chain, feed, fresh, reward_calls

from seqcollector.core import dump_state, load_state
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import (
    Alert,
    DeleteKeys,
    ListPush,
    QueryDaySet,
    RelayerCall,
    SetAdd,
    SetRemove,
    SetValue,
)
from seqcollector.core.inputs import Rewind

EIP55 = checksum(MARKET)


def all_effects(by_block: dict[int, list]) -> list:
    return [e for n in sorted(by_block) for e in by_block[n]]


def world_with_days() -> World:
    w = World(total_nodes=5)
    for day in (1, 2, 3):
        w.sets[day] = [3, 1, 10]
        for slot in (1, 3, 10):
            w.counts[(day, slot)] = day * 100 + slot
    return w


def test_periodic_update_every_interval_all_chunks_in_slot_order() -> None:
    w = World(total_nodes=12)
    w.counts = {(1, s): s for s in (12, 2, 7, 5, 9)}
    state = fresh(rewards_update_epoch_interval=2, rewards_update_batch_size=2)
    effects = all_effects(chain(state, w, 101, 130))
    periodic = [c for c in reward_calls(effects) if c.id.startswith("rewards-periodic")]
    epochs = sorted({int(c.id.split(":")[2]) for c in periodic})
    assert epochs and all(e % 2 == 0 for e in epochs)
    first = [c for c in periodic if c.id.split(":")[2] == str(epochs[0])]
    assert [c.body["slotIDs"] for c in first] == [[2, 5], [7, 9], [12]]
    assert [c.body["submissionsList"] for c in first] == [[2, 5], [7, 9], [12]]
    assert list(first[0].body) == [
        "dataMarketAddress",
        "slotIDs",
        "submissionsList",
        "day",
        "eligibleNodes",
    ]
    assert first[0].body["dataMarketAddress"] == EIP55
    assert first[0].body["eligibleNodes"] == 0 and first[0].body["day"] == 1
    assert len({c.id for c in periodic}) == len(periodic)


def test_r8_no_cap_of_100_chunks() -> None:
    """Go cuts the slots past 100 x REWARDS_UPDATE_BATCH_SIZE silently."""
    w = World(total_nodes=250)
    w.counts = {(1, s): 1 for s in range(1, 251)}
    state = fresh(rewards_update_epoch_interval=2, rewards_update_batch_size=1)
    effects = all_effects(chain(state, w, 101, 110))
    epoch = next(int(c.id.split(":")[2]) for c in reward_calls(effects))
    sent = [c for c in reward_calls(effects) if c.id.split(":")[2] == str(epoch)]
    assert len(sent) == 250  # Go: 100
    assert [c.body["slotIDs"] for c in sent] == [[s] for s in range(1, 251)]


def test_r8_missing_total_nodes_count_alerts_and_sends_nothing() -> None:
    """Go returns a nil error: nothing sent, nothing said."""
    state = fresh(rewards_update_epoch_interval=2)
    effects = all_effects(chain(state, World(total_nodes=None), 101, 112))
    assert not reward_calls(effects)
    alerts = [a for a in of(effects, Alert) if "TotalNodesCount" in a.message]
    assert alerts and all(a.severity == "High" for a in alerts)


def test_no_call_with_an_empty_slot_list_for_periodic() -> None:
    state = fresh(rewards_update_epoch_interval=2)
    effects = all_effects(chain(state, World(total_nodes=4), 101, 120))  # no counts at all
    assert not reward_calls(effects)


def test_marker_in_go_format_and_final_update_once_at_buffer_epoch() -> None:
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    by_block = chain(state, w, 101, 150, days={111: 2})
    effects = all_effects(by_block)
    adds = of(effects, SetAdd)
    assert len(adds) == 1 and adds[0].key == f"DayRolloverEpochMarkerSetKey.{MARKET}"
    marker_epoch = int(adds[0].member)
    details = [e for e in of(effects, SetValue) if e.key.startswith("DayRolloverEpochMarkerDet")]
    assert details[0].key == f"DayRolloverEpochMarkerDetailsKey.{MARKET}.{marker_epoch}"
    assert details[0].value == (
        f'{{"LastKnownDay":"1","CurrentEpoch":{marker_epoch},"BufferEpoch":{marker_epoch + 5}}}'
    )
    assert all(e.ttl_s for e in [*adds, *details])
    lkd = [e for e in of(effects, SetValue) if e.key == f"LastKnownDayKey.{MARKET}"]
    assert [e.value for e in lkd] == ["1", "2"] and all(e.ttl_s for e in lkd)
    final = [c for c in reward_calls(effects) if c.id.startswith("rewards-final")]
    assert [c.body["slotIDs"] for c in final] == [[1, 3, 10]]  # ascending, not set order (R9)
    assert final[0].body["submissionsList"] == [101, 103, 110]
    assert final[0].body["eligibleNodes"] == 3 and final[0].body["day"] == 1
    # fired at the batch preparation of epoch marker+5, with the marker's removal (R5, R6)
    fired_at = next(n for n, out in by_block.items() if reward_calls(out))
    out = by_block[fired_at]
    assert SetRemove(f"DayRolloverEpochMarkerSetKey.{MARKET}", str(marker_epoch)) in out
    assert DeleteKeys([f"DayRolloverEpochMarkerDetailsKey.{MARKET}.{marker_epoch}"]) in out
    day_set = next(q for q in w.asked if isinstance(q, QueryDaySet))
    assert day_set.epoch == marker_epoch + 5


def test_r4_marker_fires_when_buffer_epoch_itself_is_never_batched() -> None:
    """Go fires only on BufferEpoch == E: a gap in the epochs loses the final update."""
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    chain(state, w, 101, 114, days={111: 2})
    marker = state.days[MARKET.lower()].markers[0]
    # the epochs up to past the buffer epoch are never released: blocks without releases
    for n in range(115, 115 + 2 * 8):
        feed(state, w, block(n))
    by_block = chain(state, w, 131, 150)
    final = [c for c in reward_calls(all_effects(by_block)) if c.id.startswith("rewards-final")]
    assert len(final) == 1
    first_epoch_after = (131 - 99) // 2
    assert first_epoch_after > marker.buffer_epoch


def test_r3_another_markets_epoch_never_fires_a_marker() -> None:
    other = "0x" + "bb" * 20
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000, markets=[MARKET, other])
    from corekit import params

    step(state, params(6, market=other))
    chain(state, w, 101, 114, days={111: 2})
    md = state.days[MARKET.lower()]
    assert md.markers and not md.fired
    # only the other market's epochs move on (releases of `other` at far higher epochs)
    from corekit import epoch_released

    for n in range(115, 140):
        feed(state, w, block(n))
        if n % 2:
            feed(state, w, epoch_released(n, 1000 + n, market=other))
    assert md.markers and not md.fired  # Go: other market's E == BufferEpoch fires it


def test_final_update_exactly_once_across_restart_and_reorg() -> None:
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    before = all_effects(chain(state, w, 101, 122, days={111: 2}))
    state = load_state(dump_state(state))  # a restart
    head = state.head.number
    feed(state, w, Rewind(head - 6))  # a reorg back past the firing
    after = all_effects(chain(state, w, head - 5, 160))
    finals = [c for c in reward_calls(before + after) if c.id.startswith("rewards-final")]
    assert len(finals) == 1


def test_p2_waits_for_the_final_update_then_rechecks_past_days() -> None:
    """R9: Go skips by `E % K <= 5`; we skip exactly the days whose final update is pending."""
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=2, past_days_buffer=2)
    by_block = chain(state, w, 101, 160, days={111: 2})
    effects = all_effects(by_block)
    rechecks = [c for c in reward_calls(effects) if c.id.startswith("rewards-recheck")]
    final_block = next(
        n
        for n, out in by_block.items()
        if any(c.id.startswith("rewards-final") for c in reward_calls(out))
    )
    before = [
        c
        for n in by_block
        if n < final_block
        for c in reward_calls(by_block[n])
        if c.id.startswith("rewards-recheck")
    ]
    assert not before  # day 1 was pending its final update
    assert rechecks
    assert all(c.body["slotIDs"] == [] and c.body["submissionsList"] == [] for c in rechecks)
    assert {c.body["day"] for c in rechecks} == {1}
    assert all(c.body["eligibleNodes"] == 3 for c in rechecks)


def test_p2_skips_a_day_the_chain_already_holds() -> None:
    w = world_with_days()
    w.on_chain = {1: 3}
    state = fresh(rewards_update_epoch_interval=2, past_days_buffer=2)
    effects = all_effects(chain(state, w, 101, 160, days={111: 2}))
    assert not [c for c in reward_calls(effects) if c.id.startswith("rewards-recheck")]


def test_r2_zero_count_day_marked_alerted_once_no_call() -> None:
    w = world_with_days()
    w.sets[1] = []
    state = fresh(rewards_update_epoch_interval=2, past_days_buffer=3)
    effects = all_effects(chain(state, w, 101, 190, days={111: 2}))
    zero = [e for e in of(effects, SetValue) if e.key.startswith("ZeroCountKey")]
    assert [(e.key, e.value, e.ttl_s) for e in zero] == [
        (f"ZeroCountKey.{MARKET}.1", "true", 86400)
    ]
    alerts = [a for a in of(effects, Alert) if "no eligible node" in a.message]
    assert len(alerts) == 1 and alerts[0].severity == "Medium"
    assert not [c for c in reward_calls(effects) if c.body["day"] == 1 and c.body["slotIDs"] == []]


def test_failed_chain_read_alerts_and_sends_no_recheck() -> None:
    w = world_with_days()
    w.chain_fails = True
    state = fresh(rewards_update_epoch_interval=2, past_days_buffer=2)
    effects = all_effects(chain(state, w, 101, 160, days={111: 2}))
    assert not [c for c in reward_calls(effects) if c.id.startswith("rewards-recheck")]
    assert [a for a in of(effects, Alert) if "could not be read" in a.message]


def test_r1_rewards_never_hold_back_the_batches() -> None:
    """Whatever the rewards' answers, every epoch's batches, batch count and batch size go out
    (Go aborts the epoch's batch preparation on a P2 failure)."""
    bad = World(total_nodes=None, chain_fails=True)
    bad.sets = {1: [1]}
    on = fresh(rewards_update_epoch_interval=2, past_days_buffer=2)
    off = fresh(rewards=False)
    a = all_effects(chain(on, bad, 101, 160, days={111: 2}))
    b = all_effects(chain(off, bad, 101, 160, days={111: 2}))

    def batching(effects: list) -> list:
        return [
            e
            for e in effects
            if isinstance(e, ListPush)
            or (isinstance(e, RelayerCall) and e.path == "/submitBatchSize")
            or (isinstance(e, SetValue) and e.key.startswith(("BatchCountKey", "BatchSubm")))
        ]

    assert batching(a) == batching(b) and batching(a)


def test_rewards_off_sends_nothing_and_keeps_no_marker() -> None:
    state = fresh(rewards=False)
    effects = all_effects(chain(state, world_with_days(), 101, 160, days={111: 2}))
    assert not reward_calls(effects) and not of(effects, SetAdd)
    assert not state.held_queries


def test_final_update_body_carries_eip55_not_the_configured_string() -> None:
    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    effects = all_effects(chain(state, w, 101, 140, days={111: 2}))
    final = [c for c in reward_calls(effects) if c.id.startswith("rewards-final")]
    assert final and final[0].body["dataMarketAddress"] == EIP55
    assert json.dumps(final[0].body)


def test_a_switch_from_go_adopts_its_last_known_day_and_unfired_markers() -> None:
    """Go left LastKnownDay 2 and an unfired marker of day 1 (BufferEpoch 3, already passed:
    Go's == never hit, R4): our first batch preparation fires it, removing Go's keys."""
    from seqcollector.core.inputs import StoredDays

    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    feed(state, w, StoredDays(MARKET, 2, [(1, 7, 3)]))
    from corekit import day_started

    feed(state, w, day_started(100, 2))
    by_block = chain(state, w, 101, 110)
    effects = all_effects(by_block)
    final = [c for c in reward_calls(effects) if c.id.startswith("rewards-final")]
    assert [c.body["day"] for c in final] == [1]
    assert SetRemove(f"DayRolloverEpochMarkerSetKey.{MARKET}", "7") in effects
    assert not of(effects, SetAdd)  # day 2 is the last known day: no new marker


def test_stored_days_never_override_the_cores_own_record() -> None:
    from seqcollector.core.inputs import StoredDays

    w = world_with_days()
    state = fresh(rewards_update_epoch_interval=1000)
    chain(state, w, 101, 110)  # the core knows day 1 itself now
    out = feed(state, w, StoredDays(MARKET, 5, [(4, 1, 6)]))
    assert not reward_calls(out)
    assert state.days[MARKET.lower()].last_known_day == 1
    assert state.counters["stored_days_ignored"] == 1
    assert state.days[MARKET.lower()].markers == []
