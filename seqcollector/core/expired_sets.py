"""Windows batched after their submission sets may have expired (issue 11: catch-up after an
outage longer than the sets' TTL).

Upstream (the dequeuer) writes each `SnapshotCollector.*` set with a TTL, 20 minutes on
Powerloom. A collector that was down longer than that reads the sets of the windows that
closed meanwhile after some of them expired: those windows are batched with what remains,
and alerted. Whether a set may have expired is decided from the answer's `read_at` (the wall
clock when the runtime read the sets, journaled with the answer) against the window's
deadline (chain time): `read_at - deadline > sets_ttl_s`, the TTL the answer carries
(SEQ_SUBMISSION_SETS_TTL_S). All are inputs, so a replay decides the same. `sets_ttl_s = 0`
or `read_at = 0` (an answer of a journal written before this existed, a simulation)
decides nothing.

One alert per market per run of such epochs, not one per epoch: a long catch-up has many.
The epochs wait in `State.expired_sets` until the market's first window read in time (the
collector has caught up) or `ALERT_EVERY` epochs, then one High alert names their range.
"""

from __future__ import annotations

from typing import Final

from seqcollector.core.addresses import checksum
from seqcollector.core.effects import Alert, Effect
from seqcollector.core.reporting import count
from seqcollector.core.state import State

ALERT_EVERY: Final = 100


def note(
    state: State, lc: str, epoch: int, deadline: int, read_at: int, ttl: int, out: list[Effect]
) -> None:
    """A window of `lc` was read at `read_at`: keep its epoch for the alert if its sets may
    have expired (more than `ttl` s after the deadline); alert what was kept once a window
    is read in time."""
    if not ttl or not read_at:
        return
    late = read_at - deadline
    if late > ttl:
        kept = state.expired_sets.setdefault(lc, [])
        kept.append(epoch)
        count(state, "windows_past_sets_ttl", 1)
        if len(kept) >= ALERT_EVERY:
            _alert(state, lc, ttl, out)
    elif lc in state.expired_sets:
        _alert(state, lc, ttl, out)


def _alert(state: State, lc: str, ttl: int, out: list[Effect]) -> None:
    epochs = state.expired_sets.pop(lc)
    first, last = min(epochs), max(epochs)
    message = (
        f"market {checksum(lc)}: {len(epochs)} window(s), epochs {first}..{last}, were read more "
        f"than {ttl} s (the submission sets' TTL) after they closed, after an outage: their "
        "sets may have expired and were batched with what remained. Snapshotters whose "
        "submissions expired are missing from those batches; check the finalizer's results "
        "for these epochs"
    )
    out.append(Alert(f"expired_sets:{lc}:{first}-{last}", "BatchPreparation", message, "High"))
