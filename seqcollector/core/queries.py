"""The core's queries: what it asks the world, and the answers it accepts.

Every query is an effect with a kind (its type), an id (`State.next_query_id`, never reused,
not even after a rewind), a deterministic payload and an owner: the market and epoch it is
asked for, which must still be waiting for it. Each kind has one answer input type, which
carries the query's id, market and epoch back. `KINDS` is the table (filled by the module
that owns each kind: `core.windows` for the submission sets).

Pending queries live in the `Domain` (a rewind takes back those issued after its block), or,
for a kind whose owner is never rewound (`Kind.held`: the reward updates decided at batch
preparation), in `State.held_queries`. `pending` re-issues both after a restart, whatever
their kind, in a stable order. An
answer is accepted once, for a pending query of the same kind and owner; anything else is
a counted refusal (`stale_query_result`: none pending with that id, or its owner is gone;
`mismatched_query_result`: another kind, market or epoch than the query of that id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqcollector.core.addresses import lower_address
from seqcollector.core.effects import Effect, Query
from seqcollector.core.inputs import Answer
from seqcollector.core.reporting import reject
from seqcollector.core.state import State


@dataclass(frozen=True)
class Kind:
    """One kind of query: its effect type, its answer type, whether its owner still waits
    (`live`), and what the answer does (`on_answer`, which returns whether the domain
    changed; the query is already removed from the pending ones when it runs)."""

    query: type[Any]
    answer: type[Any]
    live: Callable[[State, Any], bool]
    on_answer: Callable[[State, Any, Any, list[Effect]], bool]
    held: bool = False  # pending in `State.held_queries` (never rewound), not the domain


KINDS: dict[type[Any], Kind] = {}  # by answer type
_BY_QUERY: dict[type[Any], Kind] = {}


def register(kind: Kind) -> None:
    assert kind.answer not in KINDS and kind.query not in _BY_QUERY, kind
    KINDS[kind.answer] = kind
    _BY_QUERY[kind.query] = kind


def kind_of(query: Query) -> Kind:
    return _BY_QUERY[type(query)]


def issue(state: State, make: Callable[[int], Query]) -> Query:
    """Allocate the next query id, record the query `make(id)` as pending, return it."""
    query_id = state.next_query_id
    state.next_query_id += 1
    query = make(query_id)
    _store(state, query)[query_id] = query
    return query


def _store(state: State, query: Query) -> dict[int, Query]:
    return state.held_queries if kind_of(query).held else state.domain.queries


def pending(state: State) -> list[Query]:
    """Queries issued and not yet answered, to re-issue after a restart: by market, epoch,
    then id (the order a window's closing issues them in)."""
    every = [*state.domain.queries.values(), *state.held_queries.values()]
    return sorted(every, key=lambda q: (q.market, q.epoch, q.query_id))


def drop_owned(state: State, lc: str, epoch: int) -> None:
    """Forget the pending queries of (market, epoch): their owner is gone."""
    for query_id in [
        i for i, q in state.domain.queries.items() if (q.market, q.epoch) == (lc, epoch)
    ]:
        del state.domain.queries[query_id]


def on_answer(state: State, answer: Answer, out: list[Effect]) -> bool:
    """Apply an answer to its pending query, or refuse it (counted). -> domain changed."""
    kind = KINDS[type(answer)]
    query = state.domain.queries.get(answer.query_id) or state.held_queries.get(answer.query_id)
    if query is None:
        _stale(state, answer, out)
        return False
    lc = lower_address(answer.market)
    if not isinstance(query, kind.query) or (query.market, query.epoch) != (lc, answer.epoch):
        detail = (
            f"query {answer.query_id} ({type(answer).__name__} for market {answer.market[:64]}"
            f" epoch {answer.epoch}) answers a {type(query).__name__} for market"
            f" {query.market} epoch {query.epoch}"
        )
        reject(state, out, "mismatched_query_result", detail)
        return False
    del _store(state, query)[answer.query_id]
    if not kind.live(state, query):  # pragma: no cover - `core.invariants` rules it out
        _stale(state, answer, out)
        return True
    kind.on_answer(state, query, answer, out)
    return True


def _stale(state: State, answer: Answer, out: list[Effect]) -> None:
    detail = (
        f"query {answer.query_id} market {answer.market[:64]} epoch {answer.epoch}: none pending"
    )
    reject(state, out, "stale_query_result", detail)
