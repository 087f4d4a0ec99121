"""A small world for core reward tests: a chain of blocks with an epoch released every other
block, day starts where asked, and the eligibility keys as a dict; every query the core asks
is answered from it right away (the core is pure: its tests feed the answers as inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from corekit import MARKET, block, config, day_started, epoch_released, params

from seqcollector.core import new_state, step
from seqcollector.core.effects import (
    Effect,
    QueryDaySet,
    QueryEligibleOnChain,
    QueryNodeCounts,
    QueryPastDays,
    QuerySubmissionSets,
    RelayerCall,
)
from seqcollector.core.inputs import (
    DaySet,
    EligibleOnChain,
    Input,
    NodeCounts,
    PastDays,
    SubmissionSets,
)
from seqcollector.core.invariants import check
from seqcollector.core.state import State


@dataclass
class World:
    total_nodes: int | None = 3
    # (day, slot) -> count; day -> members of the eligible set
    counts: dict[tuple[int, int], int] = field(default_factory=dict)
    sets: dict[int, list[int]] = field(default_factory=dict)
    on_chain: dict[int, int] = field(default_factory=dict)  # day -> eligibleNodesForDay
    chain_fails: bool = False
    asked: list[object] = field(default_factory=list)

    def answer(self, q: object) -> Input:
        self.asked.append(q)
        if isinstance(q, QuerySubmissionSets):
            members = [f"{MARKET}.{q.epoch}.p{i}.{i}" for i in (1, 2)]
            return SubmissionSets(q.query_id, q.market, q.epoch, members)
        if isinstance(q, QueryNodeCounts):
            if self.total_nodes is None:
                return NodeCounts(q.query_id, q.market, q.epoch, None)
            got = [
                (s, self.counts[(q.day, s)])
                for s in range(1, self.total_nodes + 1)
                if (q.day, s) in self.counts
            ]
            return NodeCounts(
                q.query_id,
                q.market,
                q.epoch,
                self.total_nodes,
                [s for s, _ in got],
                [c for _, c in got],
            )
        if isinstance(q, QueryDaySet):
            members = sorted(self.sets.get(q.day, []))
            got = [(s, self.counts[(q.day, s)]) for s in members if (q.day, s) in self.counts]
            return DaySet(
                q.query_id,
                q.market,
                q.epoch,
                len(members),
                [s for s, _ in got],
                [c for _, c in got],
            )
        if isinstance(q, QueryPastDays):
            sizes = [len(self.sets.get(d, [])) for d in q.days]
            members = sorted(self.sets.get(q.members_of, [])) if q.members_of else []
            return PastDays(q.query_id, q.market, q.epoch, sizes, members)
        assert isinstance(q, QueryEligibleOnChain)
        if self.chain_fails:
            return EligibleOnChain(q.query_id, q.market, q.epoch, [None] * len(q.days), "down")
        return EligibleOnChain(
            q.query_id, q.market, q.epoch, [self.on_chain.get(d, 0) for d in q.days]
        )


QUERIES = (QuerySubmissionSets, QueryNodeCounts, QueryDaySet, QueryPastDays, QueryEligibleOnChain)


def feed(state: State, world: World, inp: Input) -> list[Effect]:
    """Step `inp` and every answer its queries lead to; the invariants after each step."""
    out: list[Effect] = []
    queue: list[Input] = [inp]
    while queue:
        effects = step(state, queue.pop(0))[1]
        check(state)
        out.extend(effects)
        queue[0:0] = [world.answer(e) for e in effects if isinstance(e, QUERIES)]
    return out


def chain(
    state: State, world: World, first: int, last: int, days: dict[int, int] | None = None
) -> dict[int, list[Effect]]:
    """Blocks first..last, an epoch released at every odd block (epoch (n - 99) // 2), a
    DayStartedEvent at each block of `days` (block -> day); -> effects by block."""
    by_block: dict[int, list[Effect]] = {}
    for n in range(first, last + 1):
        out = feed(state, world, block(n))
        if days and n in days:
            out += feed(state, world, day_started(n, days[n]))
        if n % 2 == 1:
            out += feed(state, world, epoch_released(n, (n - 99) // 2))
        by_block[n] = out
    return by_block


def fresh(**kw: object) -> State:
    kw.setdefault("rewards", True)
    state = new_state(config(**kw))
    step(state, params(6))
    step(state, block(100))
    return state


def reward_calls(effects: list[Effect]) -> list[RelayerCall]:
    return [e for e in effects if isinstance(e, RelayerCall) and e.path == "/submitUpdateRewards"]
