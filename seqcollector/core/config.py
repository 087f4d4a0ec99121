"""The part of the configuration the core depends on (written into every journal header)."""

from __future__ import annotations

from typing import Final

import msgspec

from seqcollector.core.addresses import lower_address

YEAR_S: Final = 365 * 24 * 3600

# Inclusive bounds of every numeric field. The settings that feed these fields
# (`seqcollector.config`) use the same bounds, so a value `run` accepts is one a journal
# header accepts, and a header with a value out of range is refused when it is decoded.
RANGES: Final[dict[str, tuple[int, int]]] = {
    "batch_size": (1, 100_000),
    "max_reorg_depth": (1, 10_000),
    "block_hash_ttl_s": (1, 10 * YEAR_S),
    "batch_ttl_s": (1, 10 * YEAR_S),
    "slot_submissions_ttl_s": (1, 10 * YEAR_S),
    "emitted_epochs_kept": (1, 10_000_000),
    "rewards_update_batch_size": (1, 100_000),
    "rewards_update_epoch_interval": (1, 1_000_000),
    "past_days_buffer": (0, 10_000),
}
MAX_MARKETS: Final = 1_000


class CoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings that change the core's outputs. Addresses are stored lowercase.

    Every field is checked on construction, decoding included (msgspec turns the ValueError
    into a ValidationError naming the field), against `RANGES`.
    """

    protocol_state: str
    markets: list[str]
    batch_size: int = 50
    max_reorg_depth: int = 64
    attestor_queue_push_enabled: bool = False
    block_hash_ttl_s: int = 30 * 60
    batch_ttl_s: int = 24 * 3600
    slot_submissions_ttl_s: int = 7 * 24 * 3600
    emitted_epochs_kept: int = 4096
    # Reward updates and day-rollover markers (`core.days`, `core.rewards`). Off when a
    # journal or state written before they existed is read (what that version did); the
    # settings turn them on by default (SEQ_FEATURE_REWARDS, as the Go collector sends them).
    rewards: bool = False
    rewards_update_batch_size: int = 50
    rewards_update_epoch_interval: int = 50
    past_days_buffer: int = 5
    periodic_eligible_count_alerts: bool = True

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"config.{name} must be between {lo} and {hi}, got {value!r}")
        protocol_state = lower_address(self.protocol_state)
        if protocol_state is None:
            raise ValueError(
                f"config.protocol_state is not a 20-byte hex address: {self.protocol_state[:64]!r}"
            )
        markets = set()
        for i, market in enumerate(self.markets):
            lc = lower_address(market)
            if lc is None:
                raise ValueError(
                    f"config.markets[{i}] is not a 20-byte hex address: {market[:64]!r}"
                )
            markets.add(lc)
        if not 1 <= len(markets) <= MAX_MARKETS:
            raise ValueError(
                f"config.markets must list 1 to {MAX_MARKETS} data markets, got {len(markets)}"
            )
        # Normalise once so every comparison in the core is a plain string compare.
        msgspec.structs.force_setattr(self, "protocol_state", protocol_state)
        msgspec.structs.force_setattr(self, "markets", sorted(markets))
