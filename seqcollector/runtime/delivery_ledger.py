"""The delivery ledger: a local file of the outbox entries that reached their endpoint.

The outbox lives in Redis; if Redis loses its data, the journal rebuilds the outbox, and
this file says which of its entries already went out (`seqcollector run --recover` does not
send those again). One entry id per line, appended and fsynced after the HTTP 200 and before
the entry is removed from Redis: an id in the ledger was delivered; an id missing from it
may have been (a crash between the 200 and the append), which recovery treats as not
delivered, so a call is repeated at worst, never lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


class DeliveryLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = None

    def add(self, entry_id: str) -> None:
        """Record `entry_id` as delivered, durably (fsync) before returning."""
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(entry_id.encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def delivered_ids(path: Path) -> set[str]:
    """Every id the ledger at `path` holds (empty when there is none). A torn last line (a
    crash while appending) is not an id: its entry counts as not delivered."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    return {line.decode() for line in complete.splitlines() if line}


def ledger_beside(journal: Path) -> Path:
    """Where the ledger of a run recorded into `journal` lives."""
    return journal.with_name(journal.name + ".delivered")
