"""Property tests of the core's days and reward updates (`core.days`, `core.rewards`).

A scenario is a chain of blocks (an epoch released at every odd block as in
`rewardkit.chain`, some epochs never released), DayStartedEvents at increasing days
(sometimes skipping one), restarts (the state serialised and loaded, between inputs or
between a step and the answers to its queries), and reorgs of up to 6 blocks onto a new
branch (which keeps its day starts or drops them). `rewardkit.World` answers every query,
from eligible sets and counts per day (some days empty), TotalNodesCount missing or not, the
chain read failing or not. The driver is this file's own, not `rewardkit.chain`: it needs
branches, gaps and restarts, and records every input fed (answers included) with the
pending rollover markers around each step.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import msgspec
from corekit import MARKET, PS, addr_topic, block, config, epoch_released, h, params
from eth_abi.abi import encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rewardkit import QUERIES, World

from seqcollector.core import Input, Log, State, dump_state, load_state, new_state, step
from seqcollector.core import pending_queries as pending_of
from seqcollector.core.abi import DAY_STARTED
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import (
    DeleteKeys,
    Effect,
    ListPush,
    Query,
    QueryDaySet,
    RelayerCall,
    SetAdd,
    SetRemove,
    SetValue,
)
from seqcollector.core.inputs import DaySet, Rewind
from seqcollector.core.invariants import check

LC = MARKET.lower()
REWARDS = "/submitUpdateRewards"
SLOTS = 8  # slot ids 1..SLOTS in the eligible sets and counts
EXAMPLES = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_enc = msgspec.json.Encoder()


@dataclass(frozen=True)
class Scenario:
    interval: int
    batch: int
    past_days: int
    max_reorg_depth: int
    last: int  # blocks 101..last after block 100
    days: dict[int, int]  # block -> the day its DayStartedEvent starts
    gaps: frozenset[int]  # epochs never released
    restarts: dict[int, bool]  # block -> restart after it (True: before the answers)
    rewinds: dict[int, tuple[int, bool]]  # block -> (depth, the new branch keeps day starts)
    total_nodes: int | None
    sets: dict[int, list[int]]
    counts: dict[tuple[int, int], int]
    on_chain: dict[int, int]
    chain_fails: bool

    def world(self) -> World:
        return World(
            total_nodes=self.total_nodes,
            counts=dict(self.counts),
            sets={d: list(m) for d, m in self.sets.items()},
            on_chain=dict(self.on_chain),
            chain_fails=self.chain_fails,
        )

    def config(self, rewards: bool = True) -> CoreConfig:
        return config(
            rewards=rewards,
            rewards_update_epoch_interval=self.interval,
            rewards_update_batch_size=self.batch,
            past_days_buffer=self.past_days,
            max_reorg_depth=self.max_reorg_depth,
        )

    def final_expected(self, day: int) -> tuple[list[int], list[int], int]:
        """(slots, counts, eligibleNodes) of `day`'s final update."""
        members = sorted(set(self.sets.get(day, [])))
        slots = [s for s in members if (day, s) in self.counts]
        return slots, [self.counts[(day, s)] for s in slots], len(members)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    last = draw(st.integers(120, 190))
    starts = sorted(draw(st.sets(st.integers(102, last - 4), max_size=4)))
    days, day = {}, 1
    for b in starts:
        day += draw(st.sampled_from([1, 1, 1, 2]))  # sometimes a day is skipped
        days[b] = day
    max_day = day
    epochs = range(1, (last - 99) // 2 + 1)
    day_sets = st.lists(st.integers(1, SLOTS), unique=True, max_size=5)  # some empty
    counts = {
        (d, slot): draw(st.integers(0, 99))
        for d in range(1, max_day + 1)
        for slot in range(1, SLOTS + 1)
        if draw(st.booleans())
    }
    total_nodes = draw(st.integers(-1, SLOTS + 2))
    return Scenario(
        interval=draw(st.integers(1, 5)),
        batch=draw(st.integers(1, 5)),
        past_days=draw(st.integers(0, 3)),
        max_reorg_depth=draw(st.sampled_from([4, 64])),  # 4: some rewinds deeper than it
        last=last,
        days=days,
        gaps=frozenset(draw(st.sets(st.sampled_from(epochs), max_size=8))),
        restarts=draw(st.dictionaries(st.integers(101, last), st.booleans(), max_size=3)),
        rewinds=draw(
            st.dictionaries(
                st.integers(106, last),
                st.tuples(st.sampled_from(range(1, 7)), st.booleans()),
                max_size=2,
            )
        ),
        total_nodes=None if total_nodes < 0 else total_nodes,  # -1: TotalNodesCount missing
        sets={d: draw(day_sets) for d in range(1, max_day + 1)},
        counts=counts,
        on_chain=draw(st.dictionaries(st.integers(1, max_day), st.sampled_from([0, 2]))),
        chain_fails=draw(st.booleans()),
    )


def day_started(n: int, day: int, branch: int) -> Log:
    data = "0x" + encode(["uint256", "uint256"], [day, 5]).hex()
    return Log(PS, [DAY_STARTED, addr_topic(MARKET)], data, n, h(n, branch), 0)


@dataclass
class Step:
    inp: Input
    effects: list[Effect]
    pending: frozenset[int]  # days with a rollover marker not yet fired, before the step
    day: int | None  # the market's day after the step
    markers: tuple[tuple[int, int], ...]  # (epoch, day) of the pending markers after it
    settled: bool = False  # the last step of an input's group: every query answered


@dataclass
class Run:
    """One scenario fed through the core, every step checked (`core.invariants`)."""

    state: State
    world: World
    steps: list[Step] = field(default_factory=list)
    restarts: int = 0

    def feed(self, inp: Input, restart_before_answers: bool = False) -> None:
        """Step `inp`, then the answers to its queries (depth first, as `rewardkit.feed`);
        with `restart_before_answers` the state is serialised and loaded after every step,
        while its queries are still unanswered (they must survive it)."""
        queue: list[Input | Query] = [inp]
        while queue:
            item = queue.pop(0)
            answer = self.world.answer(item) if isinstance(item, QUERIES) else item
            md = self.state.days.get(LC)
            pending = frozenset(m.day for m in md.markers) if md else frozenset()
            effects = step(self.state, answer)[1]
            check(self.state)
            day = self.state.domain.markets[LC].day
            md = self.state.days.get(LC)
            after = tuple((m.epoch, m.day) for m in md.markers) if md else ()
            self.steps.append(Step(answer, effects, pending, day, after))
            queue[0:0] = [e for e in effects if isinstance(e, QUERIES)]
            self.steps[-1].settled = not queue
            if restart_before_answers:
                self.restart()
                left = {q.query_id for q in queue if isinstance(q, QUERIES)}
                assert {q.query_id for q in pending_of(self.state)} == left

    def restart(self) -> None:
        self.state = load_state(dump_state(self.state))
        self.restarts += 1

    def effects(self) -> list[Effect]:
        return [e for s in self.steps for e in s.effects]


def drive(sc: Scenario, rewards: bool = True) -> Run:
    run = Run(new_state(sc.config(rewards)), sc.world())
    run.feed(params(6))
    run.feed(block(100))
    branch_of = {100: 0}
    branch, next_branch = 0, 1
    replaced_to, keep_days = 0, True  # the current branch replaced blocks up to replaced_to
    rewound: set[int] = set()
    n = 101
    while n <= sc.last:
        mid = sc.restarts.get(n, False)
        run.feed(block(n, branch, branch_of[n - 1]), mid)
        branch_of[n] = branch
        if n in sc.days and (n > replaced_to or keep_days):
            run.feed(day_started(n, sc.days[n], branch), mid)
        epoch = (n - 99) // 2
        if n % 2 == 1 and epoch not in sc.gaps:
            run.feed(epoch_released(n, epoch, branch=branch), mid)
        if n in sc.restarts:
            run.restart()
        if n in sc.rewinds and n not in rewound:
            rewound.add(n)
            depth, keep_days = sc.rewinds[n]
            to = max(100, n - depth)
            run.feed(Rewind(to))
            branch, next_branch, replaced_to = next_branch, next_branch + 1, n
            n = to + 1
            continue
        n += 1
    return run


def calls(steps: list[Step], prefix: str) -> list[tuple[int, RelayerCall]]:
    """(step index, call) of the reward calls whose id starts with `prefix`."""
    return [
        (i, e)
        for i, s in enumerate(steps)
        for e in s.effects
        if isinstance(e, RelayerCall) and e.path == REWARDS and e.id.startswith(prefix)
    ]


def details_key(epoch: int) -> str:
    return f"DayRolloverEpochMarkerDetailsKey.{LC}.{epoch}"


def ints(body: dict[str, object], key: str) -> list[int]:
    value = body[key]
    assert isinstance(value, list) and all(isinstance(x, int) for x in value), (key, body)
    return value


# -- properties ---------------------------------------------------------------------------


@EXAMPLES
@given(scenarios())
def test_each_day_gets_at_most_one_final_update_exactly_its_eligible_counts(
    sc: Scenario,
) -> None:
    run = drive(sc)
    finals: dict[int, list[tuple[int, int, RelayerCall]]] = defaultdict(list)
    for i, c in calls(run.steps, "rewards-final:"):
        _, lc, day_text, chunk = c.id.split(":")
        assert lc == LC and int(day_text) == c.body["day"]
        finals[int(day_text)].append((i, int(chunk), c))
    asked = [q.day for q in run.world.asked if isinstance(q, QueryDaySet)]
    assert len(asked) == len(set(asked))  # each day's set read once: one final decision
    for day, chunks in finals.items():
        assert day in asked
        assert [k for _, k, _ in chunks] == list(range(len(chunks)))  # chunks 0..k-1 once
        assert len({i for i, _, _ in chunks}) == 1  # all in one step
        slots, counts, size = sc.final_expected(day)
        bodies = [c.body for _, _, c in chunks]
        assert [s for b in bodies for s in ints(b, "slotIDs")] == slots
        assert [n for b in bodies for n in ints(b, "submissionsList")] == counts
        assert all(b["eligibleNodes"] == size for b in bodies)
        lens = [len(ints(b, "slotIDs")) for b in bodies]
        assert all(0 < k <= sc.batch for k in lens) and all(k == sc.batch for k in lens[:-1])
    for day in asked:  # a day whose set has counted members gets its update
        assert (day in finals) == bool(sc.final_expected(day)[0])


@EXAMPLES
@given(scenarios())
def test_marker_is_removed_with_its_final_update_and_never_outlives_its_buffer_epoch(
    sc: Scenario,
) -> None:
    """R4-R6: one marker per day left behind, in Go format; removed (SREM + DEL) in the
    step that puts that day's final update out (the answer to the day set read), asked at
    the first batch preparation at or past its BufferEpoch, and in no other step."""
    run = drive(sc)
    set_key = f"DayRolloverEpochMarkerSetKey.{LC}"
    asked = {q.query_id: q for q in run.world.asked if isinstance(q, QueryDaySet)}
    added: dict[tuple[int, int], int] = {}  # (marker epoch, day) -> step index
    removed: dict[tuple[int, int], int] = {}
    batched: list[tuple[int, int]] = []  # (step index, epoch)
    for i, s in enumerate(run.steps):
        for e in s.effects:
            if isinstance(e, SetAdd) and e.key == set_key:
                epoch = int(e.member)
                details = [
                    v for v in s.effects if isinstance(v, SetValue) and v.key == details_key(epoch)
                ]
                assert len(details) == 1 and e.ttl_s and details[0].ttl_s
                fields = json.loads(details[0].value)
                assert list(fields) == ["LastKnownDay", "CurrentEpoch", "BufferEpoch"]
                assert (fields["CurrentEpoch"], fields["BufferEpoch"]) == (epoch, epoch + 5)
                key = (epoch, int(fields["LastKnownDay"]))
                assert key not in added
                added[key] = i
            elif isinstance(e, SetValue) and e.key.startswith(f"BatchCountKey.{LC}."):
                batched.append((i, int(e.key.rsplit(".", 1)[1])))
        removals = [
            e
            for e in s.effects
            if (isinstance(e, SetRemove) and e.key == set_key)
            or (isinstance(e, DeleteKeys) and any("DayRolloverEpoch" in k for k in e.keys))
        ]
        if isinstance(s.inp, DaySet):
            q = asked[s.inp.query_id]
            key = (q.marker_epoch, q.day)
            assert key in added and key not in removed
            removed[key] = i
            expected = [
                SetRemove(set_key, str(q.marker_epoch)),
                DeleteKeys([details_key(q.marker_epoch)]),
            ]
            assert removals == expected
            finals = [c for c in s.effects if isinstance(c, RelayerCall)]
            assert all(c.id.startswith(f"rewards-final:{LC}:{q.day}:") for c in finals)
        else:
            assert not removals, removals
    assert len({day for _, day in added}) == len(added)  # one marker per day
    for (epoch, day), i in added.items():
        due = [j for j, batched_epoch in batched if j > i and batched_epoch >= epoch + 5]
        if not due:
            assert (epoch, day) not in removed
            continue
        # the final fires at the first batch preparation at or past BufferEpoch
        fired = asked[run.steps[removed[(epoch, day)]].inp.query_id]  # type: ignore[union-attr]
        assert fired in run.steps[due[0]].effects


@EXAMPLES
@given(scenarios())
def test_every_reward_call_is_well_formed(sc: Scenario) -> None:
    """No call with an empty slot list but P2's `{[], [], X, n}` with n > 0; every periodic
    call has eligibleNodes 0, ascending slots in 1..TotalNodesCount with their counts; a P2
    call only for a past day inside the buffer that the chain holds 0 for, none while that
    day's final update is pending; every outbox id once."""
    run = drive(sc)
    out = run.effects()
    ids = [e.id for e in out if isinstance(e, RelayerCall)]
    assert len(ids) == len(set(ids))
    for s in run.steps:
        for c in s.effects:
            if not isinstance(c, RelayerCall) or c.path != REWARDS:
                continue
            b = c.body
            slots, counts = b["slotIDs"], b["submissionsList"]
            assert isinstance(slots, list) and isinstance(counts, list)
            assert len(slots) == len(counts) and slots == sorted(set(slots))
            day = b["day"]
            assert isinstance(day, int)
            if c.id.startswith("rewards-recheck:"):
                assert slots == [] and b["eligibleNodes"] == len(set(sc.sets[day])) > 0
                assert day not in s.pending, f"P2 for day {day} while its final is pending"
                assert not sc.chain_fails and sc.on_chain.get(day, 0) == 0
                assert s.day is not None and max(1, s.day - sc.past_days) <= day < s.day
                continue
            assert slots, c
            assert len(slots) <= sc.batch
            if c.id.startswith("rewards-periodic:"):
                assert b["eligibleNodes"] == 0
                assert sc.total_nodes is not None and all(1 <= x <= sc.total_nodes for x in slots)
                assert counts == [sc.counts[(day, x)] for x in slots]
            else:
                assert c.id.startswith("rewards-final:"), c.id
    # the periodic updates of one epoch: exactly the slots 1..N that have a count, in order
    by_epoch: dict[str, list[int]] = defaultdict(list)
    days_of: dict[str, int] = {}
    for _, c in calls(run.steps, "rewards-periodic:"):
        base = c.id.rsplit(":", 1)[0]
        by_epoch[base] += ints(c.body, "slotIDs")
        day = c.body["day"]
        assert isinstance(day, int)
        days_of[base] = day
    for base, slots in by_epoch.items():
        n = sc.total_nodes or 0
        assert slots == [x for x in range(1, n + 1) if (days_of[base], x) in sc.counts]


@EXAMPLES
@given(scenarios())
def test_replaying_the_inputs_fed_gives_byte_identical_effects(sc: Scenario) -> None:
    """The inputs fed, answers included, into a fresh state (no restarts): the same effects,
    byte for byte, step by step."""
    run = drive(sc)
    state = new_state(sc.config())
    for s in run.steps:
        assert _enc.encode(step(state, s.inp)[1]) == _enc.encode(s.effects)
    assert dump_state(state) == dump_state(run.state)


def batching(effects: list[Effect]) -> list[Effect]:
    return [
        e
        for e in effects
        if (isinstance(e, ListPush) and e.key == "finalizerQueue")
        or (isinstance(e, RelayerCall) and e.path == "/submitBatchSize")
        or (
            isinstance(e, SetValue) and e.key.startswith(("BatchCountKey.", "BatchSubmissionsKey."))
        )
    ]


@EXAMPLES
@given(scenarios())
def test_batches_are_those_of_a_run_without_rewards(sc: Scenario) -> None:
    """R1: whatever the rewards do (failing reads, missing TotalNodesCount, empty days),
    every epoch's batches, batch count and batch size are those of rewards=False."""
    on, off = drive(sc), drive(sc, rewards=False)
    assert batching(on.effects()) == batching(off.effects())
    assert not [e for e in off.effects() if isinstance(e, RelayerCall) and e.path == REWARDS]


def marker_keys_mismatches(run: Run) -> list[str]:
    """Where the Go-format marker keys (the commits apply SADD / SET / SREM / DEL in order)
    do not describe the core's pending markers once an input's group is done: one set
    member per marker, its details naming its day."""
    set_key = f"DayRolloverEpochMarkerSetKey.{LC}"
    members: set[str] = set()
    details: dict[str, str] = {}
    found = []
    for i, s in enumerate(run.steps):
        for e in s.effects:
            if isinstance(e, SetAdd) and e.key == set_key:
                members.add(e.member)
            elif isinstance(e, SetRemove) and e.key == set_key:
                members.discard(e.member)
            elif isinstance(e, SetValue) and e.key.startswith("DayRolloverEpochMarkerDetails"):
                details[e.key] = e.value
            elif isinstance(e, DeleteKeys):
                for k in e.keys:
                    details.pop(k, None)
        if not s.settled:
            continue
        days = [
            json.loads(details.get(details_key(ep), "{}")).get("LastKnownDay")
            for ep, _ in s.markers
        ]
        if (
            members != {str(ep) for ep, _ in s.markers}
            or len(members) != len(s.markers)
            or days != [str(d) for _, d in s.markers]
        ):
            found.append(f"step {i}: keys {sorted(members)} {details} for markers {s.markers}")
    return found


@EXAMPLES
@given(scenarios().filter(lambda sc: sc.max_reorg_depth > 6))
def test_marker_keys_in_redis_mirror_the_pending_markers(sc: Scenario) -> None:
    """Reorgs within MAX_REORG_DEPTH (for deeper ones see the xfail below)."""
    assert marker_keys_mismatches(drive(sc)) == []


# -- a case found while writing these ---------------------------------------------------------

# A reorg of 6 blocks at block 122 (deeper than MAX_REORG_DEPTH=4) replaces block 117, the
# release of epoch 9, whose batch preparation (block 121) made day 1's marker; its new branch
# carries no DayStartedEvent (days 2 at 120 and 3 at 122 are gone). The core forgets that
# epoch 9 was batched and batches it again at block 121 of the new branch, where the day is
# still 3 (a deep rewind keeps the domain) and LastKnownDay 2: a second marker, day 2's, with
# the same epoch 9.
MARKER_EPOCH_COLLISION = Scenario(
    interval=1000,
    batch=2,
    past_days=0,
    max_reorg_depth=4,
    last=160,
    days={120: 2, 122: 3},
    gaps=frozenset(),
    restarts={},
    rewinds={122: (6, False)},
    total_nodes=3,
    sets={1: [1, 2], 2: [1], 3: [2]},
    counts={(1, 1): 5, (2, 1): 7, (3, 2): 1},
    on_chain={},
    chain_fails=False,
)


def test_redis_rollover_markers_mirror_the_pending_ones_after_a_deep_reorg() -> None:
    """Found while writing these: the second marker took the first's epoch, so its details
    overwrote the first's in Redis. Now the transition waits for the next batch
    preparation, whose epoch is free."""
    run = drive(MARKER_EPOCH_COLLISION)
    assert run.state.counters["day_transition_deferred"] == 1
    assert run.state.counters["reward_calls_final"] == 2  # both final updates do go out
    assert marker_keys_mismatches(run) == []
