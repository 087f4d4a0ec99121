"""Batches: grouping, order, exact payloads of the reference, day counts, at-most-once."""

from corekit import MARKET, block, day_started, epoch_released, of, run, started

from seqcollector.core import SubmissionSets
from seqcollector.core.addresses import checksum
from seqcollector.core.batching import go_json, plan_batches
from seqcollector.core.effects import (
    Alert,
    IncrementBy,
    ListPush,
    QuerySubmissionSets,
    Rejected,
    RelayerCall,
    SetValue,
)

EIP55 = checksum(MARKET)


def closed(state, epoch=5):
    run(state, block(101), epoch_released(101, epoch))
    effects = run(state, block(102), block(103), block(104), block(105))
    [query] = of(effects, QuerySubmissionSets)
    return query


def key(project, slot, epoch=5):
    return f"{MARKET}.{epoch}.{project}.{slot}"


def test_batches_are_grouped_by_project_sorted_and_cut_by_batch_size():
    state = started(batch_size=2)
    query = closed(state)
    members = [key("p3", 1), key("p1", 2), key("p2", 3), key("p1", 1), key("p2", 3)]
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, members))
    pushes = of(effects, ListPush)
    assert [p.key for p in pushes] == ["finalizerQueue", "finalizerQueue"]
    assert pushes[0].value == (
        '{"DataMarketAddress":"' + EIP55 + '","EpochID":5,"BatchID":1,"Batch":'
        '{"p1":["' + key("p1", 1) + '","' + key("p1", 2) + '"],"p2":["' + key("p2", 3) + '"]}}'
    )
    assert pushes[1].value == (
        '{"DataMarketAddress":"' + EIP55 + '","EpochID":5,"BatchID":2,"Batch":'
        '{"p3":["' + key("p3", 1) + '"]}}'
    )
    sets = {e.key: e for e in of(effects, SetValue)}
    assert sets[f"BatchSubmissionsKey.{MARKET}.5.2"].value == '{"p3":["' + key("p3", 1) + '"]}'
    assert sets[f"BatchSubmissionsKey.{MARKET}.5.1"].ttl_s == 86400
    assert sets[f"BatchCountKey.{MARKET}.5"].value == "2"
    [call] = of(effects, RelayerCall)
    assert call.path == "/submitBatchSize"
    assert call.body == {"dataMarketAddress": EIP55, "epochID": 5, "batchSize": 2}
    incr = {(e.key, e.amount) for e in of(effects, IncrementBy)}
    assert incr == {
        (f"SlotSubmissionsKey.{MARKET}.1.1", 2),
        (f"SlotSubmissionsKey.{MARKET}.1.2", 1),
        (f"SlotSubmissionsKey.{MARKET}.1.3", 1),  # the duplicate key counts once
    }
    assert all(e.ttl_s == 7 * 86400 for e in of(effects, IncrementBy))


def test_member_order_does_not_change_the_effects():
    members = [key(f"p{i % 7}", i) for i in range(40)]
    a, b = started(batch_size=3), started(batch_size=3)
    qa, qb = closed(a), closed(b)
    ea = run(a, SubmissionSets(qa.query_id, MARKET, 5, members))
    eb = run(b, SubmissionSets(qb.query_id, MARKET, 5, list(reversed(members))))
    assert ea == eb


def test_malformed_members_are_skipped_counted_and_alerted():
    state = started()
    query = closed(state)
    bad = ["garbage", f"{MARKET}.5.p1", f"{MARKET}.5.p1.x", f"{MARKET}.5..3"]
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, [key("p1", 1), *bad]))
    assert len(of(effects, ListPush)) == 1
    [alert] = of(effects, Alert)
    assert "skipped 4 entries" in alert.message and "epoch 5" in alert.message
    assert "malformed_submission 4" in alert.message
    assert state.counters["malformed_submission"] == 4


def test_poison_members_are_skipped_by_reason_and_the_window_is_batched():
    """Issue 8: a slot above 2^64-1 (OverflowError in the state), a slot of more than 4,300
    digits (ValueError from int()), a lone surrogate (not UTF-8): each used to raise."""
    state = started()
    query = closed(state)
    bad = [
        key("p1", 2**64),  # one above uint64
        key("p1", "9" * 5000),  # int() refuses more than 4,300 digits
        key("p\ud800", 3),  # a lone surrogate
        "x" * 100_000,  # any length
    ]
    good = [key("p1", 2**64 - 1), key("p2", 1)]
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, [*good, *bad]))
    [push] = of(effects, ListPush)
    assert str(2**64 - 1) in push.value and "p2" in push.value
    assert state.counters["slot_out_of_range"] == 2
    assert state.counters["not_utf8"] == 1
    assert state.counters["malformed_submission"] == 1
    [alert] = of(effects, Alert)
    assert "skipped 4 entries" in alert.message
    assert "not_utf8 1" in alert.message and "slot_out_of_range 2" in alert.message
    assert "(100000 chars)" in alert.message and len(alert.message) < 1000
    import msgspec

    from seqcollector.core import dump_state, load_state

    msgspec.json.encode(effects)  # every effect can be journaled and sent
    load_state(dump_state(state))  # and the state stored
    assert 5 in state.emitted[MARKET.lower()].epochs


def test_skipped_entries_from_the_shell_are_counted_and_named_with_their_key():
    from seqcollector.core.inputs import Skipped

    state = started()
    query = closed(state)
    skipped = [
        Skipped("wrong_type_key", query.keys[0], "a string, not a set"),
        Skipped("not_utf8", query.keys[1], "b'\\xff\\xfe'"),
        Skipped("something new", "", "?"),
    ]
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, [key("p1", 1)], skipped))
    assert len(of(effects, ListPush)) == 1
    [alert] = of(effects, Alert)
    assert query.keys[0] in alert.message and "a string, not a set" in alert.message
    assert state.counters["wrong_type_key"] == 1
    assert state.counters["not_utf8"] == 1
    assert state.counters["other_skipped"] == 1


def test_numbers_outside_int64_are_refused_before_anything_prints_them():
    from seqcollector.core import Block, Rewind, Tick

    state = started()
    huge = 10**5000  # str() of it raises ValueError
    for inp in (
        Block(huge, "0x" + "11" * 32, "0x" + "22" * 32, 1),
        Tick(-huge),
        Rewind(2**63),
        SubmissionSets(huge, MARKET, 5, []),
    ):
        [rejected] = run(state, inp)
        assert isinstance(rejected, Rejected) and rejected.reason == "number_out_of_range"
    assert state.counters["number_out_of_range"] == 4


def test_empty_epoch_reports_zero_batches_once():
    state = started()
    query = closed(state)
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, []))
    assert of(effects, ListPush) == []
    assert [c.body["batchSize"] for c in of(effects, RelayerCall)] == [0]


def test_stale_or_repeated_query_result_is_refused():
    state = started()
    query = closed(state)
    answer = SubmissionSets(query.query_id, MARKET, 5, [key("p1", 1)])
    run(state, answer)
    [r] = of(run(state, answer), Rejected)
    assert r.reason == "stale_query_result"
    [r] = of(run(state, SubmissionSets(999, MARKET, 6, [])), Rejected)
    assert r.reason == "stale_query_result"


def test_day_comes_from_day_started_event_not_wall_time():
    state = started()
    run(state, block(101), day_started(101, 42))
    run(state, epoch_released(101, 5), block(102), block(103), block(104))
    [query] = of(run(state, block(105)), QuerySubmissionSets)
    effects = run(state, SubmissionSets(query.query_id, MARKET, 5, [key("p", 9)]))
    assert [e.key for e in of(effects, IncrementBy)] == [f"SlotSubmissionsKey.{MARKET}.42.9"]


def test_go_json_escapes_like_encoding_json():
    assert go_json({"a<b": ["x&y", "z>\u2028"]}) == '{"a\\u003cb":["x\\u0026y","z\\u003e\\u2028"]}'


def test_plan_batches_slot_counts_sorted_by_slot():
    plan = plan_batches([key("p", 10), key("p", 2), key("q", 2)], 50)
    assert plan.slot_counts == [(2, 2), (10, 1)]
    assert len(plan.batches) == 1


def test_a_slot_key_gets_its_ttl_on_the_first_increment_of_the_day_only():
    state = started()
    run(state, block(101), epoch_released(101, 1), block(102), epoch_released(102, 2))
    run(state, block(103), block(104))
    q1 = of(run(state, block(105)), QuerySubmissionSets)[0]
    first = of(run(state, SubmissionSets(q1.query_id, MARKET, 1, [key("p", 1, 1)])), IncrementBy)
    q2 = of(run(state, block(106)), QuerySubmissionSets)[0]
    members = [key("p", 1, 2), key("p", 2, 2)]
    again = of(run(state, SubmissionSets(q2.query_id, MARKET, 2, members)), IncrementBy)
    assert [e.ttl_s for e in first] == [7 * 86400]
    assert [(e.key.rsplit(".", 1)[1], e.ttl_s) for e in again] == [("1", None), ("2", 7 * 86400)]
    run(state, block(107), day_started(107, 2), epoch_released(107, 3))
    for n in range(108, 111):
        run(state, block(n))
    q3 = of(run(state, block(111)), QuerySubmissionSets)[0]
    new_day = of(run(state, SubmissionSets(q3.query_id, MARKET, 3, [key("p", 1, 3)])), IncrementBy)
    assert [(e.key, e.ttl_s) for e in new_day] == [(f"SlotSubmissionsKey.{MARKET}.2.1", 7 * 86400)]
