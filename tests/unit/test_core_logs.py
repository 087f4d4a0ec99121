"""Logs: decoded in the core; anything unexpected is a counted refusal, never an exception."""

from corekit import (
    MARKET,
    PS,
    addr_topic,
    batch_completed,
    batch_submitted,
    block,
    epoch_released,
    h,
    of,
    params,
    run,
    started,
    word,
)
from eth_utils.crypto import keccak

from seqcollector.core import Log, new_state
from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.core.addresses import checksum
from seqcollector.core.effects import HashSet, ListPush, Rejected

OTHER = "0x" + "bb" * 20


def reasons(effects):
    return [r.reason for r in of(effects, Rejected)]


def test_logs_from_another_address_are_refused():
    state = started()
    log = epoch_released(100, 1)
    foreign = Log(OTHER, log.topics, log.data, 100, h(100), 0)
    assert reasons(run(state, foreign)) == ["foreign_address"]


def test_address_case_does_not_matter():
    state = started()
    log = epoch_released(100, 1)
    upper = Log("0x" + PS[2:].upper(), log.topics, log.data, 100, "0x" + h(100)[2:].upper(), 0)
    assert reasons(run(state, upper)) == []
    assert 1 in state.domain.markets[MARKET].windows


def test_data_market_look_alike_event_is_ignored():
    state = started()
    sig = "EpochReleased(uint256,uint256,uint256,uint256)"  # no address argument
    topic = "0x" + keccak(text=sig).hex()
    log = Log(PS, [topic, word(1)], "0x" + "00" * 128, 100, h(100), 0)
    assert reasons(run(state, log)) == ["unknown_topic"]


def test_unconfigured_market_and_malformed_data_are_refused():
    state = started()
    log = epoch_released(100, 1, market=OTHER)
    assert reasons(run(state, log)) == ["unconfigured_market"]
    bad = Log(PS, [EPOCH_RELEASED, addr_topic(MARKET), word(1)], "0x1234", 100, h(100), 0)
    assert reasons(run(state, bad)) == ["malformed_log"]
    dirty_topic = "0x" + "ff" * 12 + MARKET[2:]
    bad2 = Log(
        PS, [EPOCH_RELEASED, dirty_topic, word(1)], epoch_released(100, 1).data, 100, h(100), 0
    )
    assert reasons(run(state, bad2)) == ["malformed_log"]
    assert state.counters["malformed_log"] == 2


def test_log_for_a_block_that_is_not_the_head_is_refused():
    state = started()
    run(state, block(101))
    assert reasons(run(state, epoch_released(100, 1))) == ["log_not_at_head"]


def test_attestor_queue_push_only_when_enabled():
    on, off = started(attestor_queue_push_enabled=True), started()
    log = batch_submitted(100, 3, "bafy<cid>")
    [push] = of(run(on, log), ListPush)
    assert push.key == "attestorQueue"
    assert push.value == (
        '{"DataMarketAddress":"' + checksum(MARKET) + '","BatchCID":"bafy\\u003ccid\\u003e",'
        '"EpochID":3}'
    )
    assert of(run(off, log), ListPush) == []


def test_batch_submissions_completed_is_tracked():
    state = started()
    run(state, batch_completed(100, 9))
    assert state.domain.markets[MARKET].last_completed_epoch == 9


def test_market_params_write_the_startup_tables_keyed_eip55():
    state = new_state(started().config)
    effects = run(state, params(window=45))
    eip55 = checksum(MARKET)
    assert effects == [
        HashSet("SubmissionLimitTable", eip55, "45"),
        HashSet("DaySizeTableKey", eip55, "864000000"),
        HashSet("DailySnapshotQuotaTableKey", eip55, "1000"),
    ]
    assert run(state, params(window=45)) == []  # unchanged parameters: nothing to write


def test_release_before_market_params_is_refused_and_alerted():
    state = new_state(started().config)
    run(state, block(100))
    effects = run(state, epoch_released(100, 1))
    assert reasons(effects) == ["no_market_params"]


def test_a_re_read_with_a_later_day_counter_writes_no_table_again():
    state = new_state(started().config)
    assert len(run(state, params(window=45, day=1))) == 3
    assert run(state, params(window=45, day=7)) == []  # a restart later in the run
    assert len(run(state, params(window=50, day=7))) == 3  # the window really changed
