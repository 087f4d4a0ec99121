"""How the core tells what it refused or could not do: counters, `Rejected`, `Alert`, and
text from outside made safe to print (shortened, lone surrogates escaped)."""

from __future__ import annotations

from seqcollector.core.effects import Alert, Effect, Rejected
from seqcollector.core.state import State


def count(state: State, name: str, n: int) -> None:
    state.counters[name] = state.counters.get(name, 0) + n


def reject(
    state: State, out: list[Effect], reason: str, detail: str, block: int | None = None
) -> None:
    """Refuse an input (or part of one): counted under `reason`, reported with `detail`."""
    count(state, reason, 1)
    out.append(Rejected(reason, printable(detail), block))


def alert(state: State, step_name: str, message: str, severity: str) -> Alert:
    """An alert whose id is the input that raised it (one per input and step)."""
    return Alert(f"{step_name}:{state.inputs_seen}", step_name, message, severity)


def outbox_id(kind: str, state: State, lc: str, epoch: int) -> str:
    """The id of an epoch's outbox entry. An epoch batched again after a reorg deeper than
    MAX_REORG_DEPTH (the new chain's) gets an id of its own: the dispatcher marks an id
    done after its POST, which must never remove the new chain's entry in place of the old."""
    generation = state.counters.get("reorg_too_deep", 0)
    return f"{kind}:{lc}:{epoch}" + (f":{generation}" if generation else "")


def clip(text: str, limit: int = 120) -> str:
    """Text from outside (a key, the shell's description of a member), shortened, JSON-safe."""
    return printable(text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)")


def shorten(text: str, limit: int = 80) -> str:
    """`text` quoted, at most about `limit` characters, safe to write as JSON."""
    if len(text) <= limit:
        return printable(repr(text))
    return printable(repr(text[:limit])) + f"... ({len(text)} chars)"


def printable(text: str) -> str:
    """`text` with anything UTF-8 cannot carry (lone surrogates) escaped."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
