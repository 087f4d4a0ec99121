"""Market parameters: the ProtocolState views of each configured market, read by the shell
at start (pinned at the block before the first one processed) and fed as `MarketParams`.

The start-up tables (`SubmissionLimitTable`, `DaySizeTableKey`,
`DailySnapshotQuotaTableKey`, fields keyed by the EIP-55 address) are written when their
values change, not on every start: the day counter moves on, a re-read at a restart must
not write (or journal) anything new.
"""

from __future__ import annotations

from seqcollector.core import keys
from seqcollector.core.addresses import checksum, lower_address
from seqcollector.core.effects import Effect, HashSet
from seqcollector.core.inputs import MarketParams
from seqcollector.core.reporting import reject
from seqcollector.core.state import State

_MAX = 2**62  # numbers kept in the state must fit msgpack's 64-bit ints, sums included


def on_market_params(state: State, p: MarketParams, out: list[Effect]) -> bool:
    """-> the domain changed."""
    lc = lower_address(p.market)
    ms = state.domain.markets.get(lc) if lc is not None else None
    if lc is None or ms is None:
        reject(state, out, "unconfigured_market", f"market parameters for {p.market[:64]}")
        return False
    numbers = (p.submission_window, p.day_size, p.daily_quota, p.epochs_in_a_day, p.day_counter)
    if min(numbers) < 0 or max(numbers) > _MAX:
        reject(state, out, "malformed_params", f"market {lc}: parameter out of range {numbers}")
        return False
    params = MarketParams(lc, *numbers)
    if ms.day is None:
        ms.day = p.day_counter
    tables = (p.submission_window, p.day_size, p.daily_quota)
    old = ms.params
    ms.params = params
    if old is None or (old.submission_window, old.day_size, old.daily_quota) != tables:
        eip55 = checksum(lc)
        out.append(HashSet(keys.SUBMISSION_LIMIT_TABLE, eip55, str(p.submission_window)))
        out.append(HashSet(keys.DAY_SIZE_TABLE, eip55, str(p.day_size)))
        out.append(HashSet(keys.DAILY_SNAPSHOT_QUOTA_TABLE, eip55, str(p.daily_quota)))
    return True
