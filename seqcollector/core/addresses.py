"""Address and hash normalisation: validated here, so the rest of the core compares strings."""

from __future__ import annotations

import re
from functools import lru_cache

from eth_utils.address import to_checksum_address

_HEX40 = re.compile(r"0x[0-9a-f]{40}")
_HEX64 = re.compile(r"0x[0-9a-f]{64}")


def lower_address(text: str) -> str | None:
    """`0x` + 40 hex digits in any case -> lowercase; anything else -> None."""
    low = text.lower()
    return low if _HEX40.fullmatch(low) else None


def lower_hash(text: str) -> str | None:
    """`0x` + 64 hex digits in any case -> lowercase; anything else -> None."""
    low = text.lower()
    return low if _HEX64.fullmatch(low) else None


@lru_cache(maxsize=1024)  # a handful of markets, checksummed on every batch
def checksum(lc: str) -> str:
    """EIP-55 form of a validated lowercase address (what the finalizer expects)."""
    return str(to_checksum_address(lc))
