"""Reading an `eth_getLogs` refusal: is it about the range, and what range would work?

Providers refuse wide or busy ranges with free-text messages. Seen in the wild:

- "query returned more than 10000 results. Try with this block range [0x1, 0x3e8]."
- "Log response size exceeded. ... this block range should work: [0x1, 0x3e8]"
- "exceed maximum block range: 5000", "query exceeds max block range 1000"
- "block range is too wide", "block range too large", "range limit exceeded"
- "eth_getLogs is limited to a 10,000 range", "up to a 2K block range"
- "maximum [from, to] blocks distance: 10000"

`range_hint(message)` returns None when the message is not about the range (the caller
re-raises), else a `RangeHint` with what the message says, possibly nothing (then halve).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SUGGESTED = re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]")
_NUMBER = r"(\d[\d,]*)\s*(k?)"
_LIMITS = [
    re.compile(p)
    for p in (
        rf"max(?:imum)? block range:?\s*{_NUMBER}",
        rf"up to (?:a )?{_NUMBER}[ -]block range",
        rf"limited to (?:a )?{_NUMBER}[ -](?:block )?range",
        rf"blocks distance:?\s*{_NUMBER}",
        rf"block range (?:limit|is limited to|cannot exceed|must be (?:less than|at most))"
        rf"[^\d]*{_NUMBER}",
        rf"range (?:of|over) {_NUMBER} blocks? (?:is )?not (?:allowed|supported)",
    )
]
_ABOUT_RANGE = (
    "block range",
    "range limit",
    "range is too",
    "range too",
    "blocks distance",
    "more than",
    "too many",
    "response size",
    "result size",
    "results limit",
    "query timeout",
    "max results",
    "limited to",
)

_NOT_ABOUT_RANGE = ("rate limit", "rate-limit", "too many requests", "requests per")


@dataclass(frozen=True)
class RangeHint:
    """What a refusal says: a hard block-range limit (`max_blocks`, a ceiling for later
    ranges), or a range that would work from the same start (`suggested_blocks`, depends on
    the data), or neither."""

    max_blocks: int | None = None
    suggested_blocks: int | None = None


def range_hint(message: str) -> RangeHint | None:
    """Parse a provider's refusal message (see the module doc) -> RangeHint, or None."""
    text = message.lower()
    if any(marker in text for marker in _NOT_ABOUT_RANGE):
        return None
    suggested = _SUGGESTED.search(text)
    if suggested is not None:
        first, last = int(suggested.group(1), 16), int(suggested.group(2), 16)
        if last >= first:
            return RangeHint(suggested_blocks=last - first + 1)
    for pattern in _LIMITS:
        found = pattern.search(text)
        if found is not None:
            value = int(found.group(1).replace(",", "")) * (1000 if found.group(2) else 1)
            if value > 0:
                return RangeHint(max_blocks=value)
    if any(marker in text for marker in _ABOUT_RANGE):
        return RangeHint()
    return None
