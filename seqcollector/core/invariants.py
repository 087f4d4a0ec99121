"""What holds after every step, asserted by the core itself: `check(state)` raises
`InvariantError` naming every rule broken. Tests and simulations run it after each step
(`Pipeline(check_invariants=True)`, `sim`); it reads the state only, in O(size of state).

- blocks linked: the retained blocks are consecutive numbers with non-decreasing timestamps,
  the anchors are older than the head, their levels strictly decrease towards the newest;
- snapshots at or below the head, in increasing block order;
- every pending query belongs to a live owner: its market's window of its epoch, in phase
  QUERIED (and every QUERIED window has its query);
- no window for a batched epoch, and windows only in the phases a window is stored in;
- the emitted epochs of each market are sorted, unique, one release block each;
- every held query (rewards) is of a held kind, filed under its id; a final update's query
  is of a day recorded as fired, and no day has both a pending and a fired marker;
- the query-id sequence is ahead of every pending query; counters are not negative.
"""

from __future__ import annotations

from itertools import pairwise

from seqcollector.core import history, queries
from seqcollector.core.effects import QueryDaySet
from seqcollector.core.state import Phase, State


class InvariantError(AssertionError):
    """The core's state broke a rule it must keep: a bug in seqcollector."""


def violations(state: State) -> list[str]:
    """Every invariant `state` breaks, described (empty: all hold)."""
    found: list[str] = []
    found += _blocks(state)
    found += _windows_and_queries(state)
    found += _history(state)
    found += _held(state)
    return found


def check(state: State) -> None:
    found = violations(state)
    if found:
        raise InvariantError(
            f"core invariants broken after input {state.inputs_seen}: " + "; ".join(found)
        )


def _blocks(state: State) -> list[str]:
    out: list[str] = []
    blocks = state.blocks
    for a, b in pairwise(blocks):
        if b.number != a.number + 1 or b.timestamp < a.timestamp:
            out.append(f"blocks {a.number} and {b.number} are not linked")
            break
    head = state.head
    last: int | None = None
    for s in state.snapshots:
        if last is not None and s.block <= last:
            out.append(f"snapshot of block {s.block} after that of {last}")
        if head is not None and s.block > head.number:
            out.append(f"snapshot of block {s.block} above the head {head.number}")
        last = s.block
    if head is not None:
        if any(a.number > head.number for a in state.anchors):
            out.append(f"an anchor above the head {head.number}")
        levels = [history.level(a.number) for a in state.anchors]
        if any(x <= y for x, y in pairwise(levels)):
            out.append("anchor levels do not strictly decrease")
    return out


def _windows_and_queries(state: State) -> list[str]:
    out: list[str] = []
    queried: dict[tuple[str, int], int] = {}
    for query_id, q in state.domain.queries.items():
        if q.query_id != query_id or query_id >= state.next_query_id:
            out.append(f"query {query_id} is filed under another id or not yet issued")
        if queries.kind_of(q).held:
            out.append(f"query {query_id} of a held kind is in the domain")
            continue
        ms = state.domain.markets.get(q.market)
        w = ms.windows.get(q.epoch) if ms is not None else None
        if w is None or w.phase is not Phase.QUERIED:
            out.append(f"query {query_id} (market {q.market} epoch {q.epoch}) has no live owner")
        if (q.market, q.epoch) in queried:
            out.append(f"market {q.market} epoch {q.epoch} has two pending queries")
        queried[(q.market, q.epoch)] = query_id
    for lc, ms in state.domain.markets.items():
        for epoch, w in ms.windows.items():
            if w.epoch != epoch:
                out.append(f"market {lc}: window {w.epoch} filed under epoch {epoch}")
            if w.phase not in (Phase.OPEN, Phase.QUERIED):
                out.append(f"market {lc} epoch {epoch}: stored in phase {w.phase.name}")
            if w.phase is Phase.QUERIED and (lc, epoch) not in queried:
                out.append(f"market {lc} epoch {epoch} is QUERIED with no pending query")
            if history.is_emitted(state, lc, epoch):
                out.append(f"market {lc} epoch {epoch} has a window but was batched")
    return out


def _history(state: State) -> list[str]:
    out: list[str] = []
    for lc, e in state.emitted.items():
        if any(a >= b for a, b in pairwise(e.epochs)):
            out.append(f"market {lc}: emitted epochs not sorted and unique")
        if e.released and len(e.released) != len(e.epochs):
            out.append(f"market {lc}: {len(e.released)} release blocks for {len(e.epochs)} epochs")
    out += [f"counter {name} is {n}" for name, n in state.counters.items() if n < 0]
    return out


def _held(state: State) -> list[str]:
    out: list[str] = []
    for query_id, q in state.held_queries.items():
        if q.query_id != query_id or query_id >= state.next_query_id:
            out.append(f"held query {query_id} is filed under another id or not yet issued")
        if not queries.kind_of(q).held:
            out.append(f"query {query_id} of a domain kind is held")
        md = state.days.get(q.market)
        if isinstance(q, QueryDaySet) and (md is None or q.day not in md.fired):
            out.append(f"final update of market {q.market} day {q.day} queried, not fired")
    for lc, md in state.days.items():
        pending = [m.day for m in md.markers]
        if pending != sorted(set(pending)):
            out.append(f"market {lc}: rollover markers not one per day, by day")
        if set(pending) & set(md.fired):
            out.append(
                f"market {lc}: days {sorted(set(pending) & set(md.fired))} pending and fired"
            )
        if any(a >= b for a, b in pairwise(md.fired)) or any(a >= b for a, b in pairwise(md.zero)):
            out.append(f"market {lc}: fired or zero days not sorted and unique")
    return out
