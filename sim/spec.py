"""What a simulation run is asked to do (`seqcollector sim`'s options), and how it fails."""

from __future__ import annotations

import msgspec


class SimSpec(msgspec.Struct, frozen=True):
    seed: int = 1
    epochs: int = 20  # per market
    markets: int = 2
    projects: int = 6
    slots: int = 8
    faults: frozenset[str] = frozenset()
    fast: bool = True
    batch_size: int = 4
    epoch_every: int = 10  # blocks between two releases of a market
    window_s: int = 30
    block_time: int = 2
    max_reorg_depth: int = 6  # reorg faults are 1..this deep
    crash_rate: float = 0.04  # per commit, with `crash`
    relayer_fail_rate: float = 0.3  # with `relayer`
    submission_values: bool = True  # write the value under each submission key (fast mode)
    lockstep: bool = True  # fast mode: a commit per block (more crash points); False for load
    processes: bool = False  # load runs on a Redis server: world and finalizer run apart
    crash_at: frozenset[tuple[int, str]] = frozenset()  # exact crash points (commit number)
    # EVM mode's days and rewards: a day of `epochs_in_a_day` epochs, a slot eligible at
    # `daily_quota` counted submissions a day, the collector's REWARDS_UPDATE_EPOCH_INTERVAL,
    # REWARDS_UPDATE_BATCH_SIZE and PAST_DAYS_BUFFER
    rewards: bool = True
    epochs_in_a_day: int = 5
    daily_quota: int = 3
    rewards_interval: int = 2
    rewards_batch: int = 3
    past_days: int = 2

    @property
    def core_reorg_depth(self) -> int:
        """The collector's MAX_REORG_DEPTH in a simulation: twice the deepest `reorg` fault."""
        return self.max_reorg_depth * 2


class SimFailed(Exception):
    """An invariant failed; the message names it and the seed."""
