"""The part of the configuration the core depends on (written into every journal header)."""

from __future__ import annotations

import msgspec


class CoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings that change the core's outputs. Addresses are stored lowercase."""

    protocol_state: str
    markets: list[str]
    batch_size: int = 50
    max_reorg_depth: int = 64
    attestor_queue_push_enabled: bool = False
    block_hash_ttl_s: int = 30 * 60
    batch_ttl_s: int = 24 * 3600
    slot_submissions_ttl_s: int = 7 * 24 * 3600
    emitted_epochs_kept: int = 4096

    def __post_init__(self) -> None:
        # Normalise once so every comparison in the core is a plain string compare.
        msgspec.structs.force_setattr(self, "protocol_state", self.protocol_state.lower())
        msgspec.structs.force_setattr(self, "markets", sorted({m.lower() for m in self.markets}))
