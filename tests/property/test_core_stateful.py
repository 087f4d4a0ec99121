"""A stateful test of the core (hypothesis RuleBasedStateMachine): blocks, releases, query
answers, reorgs, crashes (serialize and load) and ticks in any order. After every rule:
no epoch is batched twice, pending queries are exactly the queried windows, the state
survives serialization byte for byte, and nothing ever raises."""

from __future__ import annotations

import hashlib
import json

from eth_abi.abi import encode
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from seqcollector.core import (
    Block,
    Log,
    MarketParams,
    Rewind,
    SubmissionSets,
    Tick,
    dump_state,
    invariants,
    load_state,
    new_state,
    pending_queries,
    step,
)
from seqcollector.core.abi import EPOCH_RELEASED
from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Effect, ListPush
from seqcollector.core.state import Phase

PS = "0x" + "aa" * 20
MARKETS = ["0x" + "0b" * 20, "0x" + "0c" * 20]


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = CoreConfig(
            protocol_state=PS, markets=MARKETS, batch_size=2, max_reorg_depth=6
        )
        self.state = new_state(self.config)
        self.chain: list[tuple[int, str, int]] = []  # (number, hash, timestamp)
        self.branch = 0
        self.next_epoch = dict.fromkeys(MARKETS, 1)
        self.batches: dict[tuple[str, int], list[int]] = {}
        for market in MARKETS:
            self.feed(MarketParams(market, 6, 864_000_000, 1000, 5, 1))

    def feed(self, inp: object) -> list[Effect]:
        _, effects = step(self.state, inp)  # type: ignore[arg-type]
        for e in effects:
            if isinstance(e, ListPush) and e.key == "finalizerQueue":
                item = json.loads(e.value)
                key = (item["DataMarketAddress"].lower(), item["EpochID"])
                self.batches.setdefault(key, []).append(item["BatchID"])
        return effects

    @rule(gap=st.integers(0, 4))
    def mine(self, gap: int) -> None:
        number = self.chain[-1][0] + 1 if self.chain else 100
        parent = self.chain[-1][1] if self.chain else "0x" + "00" * 32
        ts = (self.chain[-1][2] if self.chain else 1_700_000_000) + gap
        digest = hashlib.sha256(f"{self.branch}:{number}".encode()).hexdigest()
        self.chain.append((number, "0x" + digest, ts))
        self.feed(Block(number, "0x" + digest, parent, ts))

    @rule(m=st.sampled_from(MARKETS))
    def release(self, m: str) -> None:
        if not self.chain:
            return
        number, block_hash, _ = self.chain[-1]
        epoch = self.next_epoch[m]
        self.next_epoch[m] += 1
        topics = [EPOCH_RELEASED, "0x" + "00" * 12 + m[2:], "0x" + f"{epoch:064x}"]
        data = "0x" + encode(["uint256"] * 3, [1, 2, 3]).hex()
        self.feed(Log(PS, topics, data, number, block_hash, 0))

    @rule(n=st.integers(0, 5), data=st.data())
    def answer(self, n: int, data: st.DataObject) -> None:
        queries = pending_queries(self.state)
        if not queries:
            return
        q = data.draw(st.sampled_from(queries))
        members = [f"{q.market}.{q.epoch}.p{i % 3}.{i}" for i in range(n)]
        self.feed(SubmissionSets(q.query_id, q.market, q.epoch, members))

    @rule(depth=st.integers(1, 8))
    def reorg(self, depth: int) -> None:
        if len(self.chain) <= depth:
            return
        self.chain = self.chain[:-depth]
        self.branch += 1
        self.feed(Rewind(self.chain[-1][0]))

    @rule()
    def crash(self) -> None:
        self.state = load_state(dump_state(self.state))

    @rule(ahead=st.integers(0, 20))
    def tick(self, ahead: int) -> None:
        if self.chain:
            self.feed(Tick(self.chain[-1][2] + ahead))

    @invariant()
    def batched_at_most_once(self) -> None:
        for key, ids in self.batches.items():
            assert ids == list(range(1, len(ids) + 1)), (key, ids)

    @invariant()
    def pending_queries_are_the_queried_windows(self) -> None:
        queried = {
            (lc, e)
            for lc, ms in self.state.domain.markets.items()
            for e, w in ms.windows.items()
            if w.phase is Phase.QUERIED
        }
        assert {(q.market, q.epoch) for q in pending_queries(self.state)} == queried
        assert not any(key in self.batches for key in queried)  # never queried again

    @invariant()
    def core_invariants_hold(self) -> None:
        invariants.check(self.state)

    @invariant()
    def state_round_trips(self) -> None:
        raw = dump_state(self.state)
        assert dump_state(load_state(raw)) == raw


CoreMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestCore = CoreMachine.TestCase
