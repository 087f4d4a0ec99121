"""An order-independent digest of a multiset of strings: compares large collections (queue
items, an epoch's submission keys) without holding them in memory."""

from __future__ import annotations

import hashlib

_MOD = 2**256


class KeySum:
    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def add(self, text: str) -> None:
        digest = hashlib.sha256(text.encode()).digest()
        self.total = (self.total + int.from_bytes(digest, "big")) % _MOD
        self.count += 1

    def minus(self, other: KeySum) -> KeySum:
        """This multiset without `other` (which it must contain)."""
        out = KeySum()
        out.total = (self.total - other.total) % _MOD
        out.count = self.count - other.count
        return out

    def plus(self, other: KeySum) -> KeySum:
        out = KeySum()
        out.total = (self.total + other.total) % _MOD
        out.count = self.count + other.count
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeySum) and (self.total, self.count) == (other.total, other.count)

    def __hash__(self) -> int:
        return hash((self.total, self.count))

    def __repr__(self) -> str:
        return f"KeySum({self.count} items, {self.total:064x}"[:40] + ")"


def item_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
