"""What the executor and the outbox dispatcher keep in Redis, under one key namespace.

- `<ns>:state`: the serialized core state (opaque bytes).
- `<ns>:checkpoint`: JSON `CheckpointRecord` (last applied input seq and block, next outbox score).
- `<ns>:outbox`: hash, outbox entry id -> JSON of the `RelayerCall` / `Alert` effect.
- `<ns>:outbox:pending`: sorted set of the ids not yet delivered, scored in emission order.
- `<ns>:lease`, `<ns>:lease:token`: the active collector's fenced lease and the fencing
  token counter (`runtime.lease`); the commit script compares the lease first.

All of them are written by the same commit script as the step that produced them
(`executor.py`), whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from seqcollector.core.effects import Alert, RelayerCall

DEFAULT_NAMESPACE = "seqcollector"

OutboxEntry = RelayerCall | Alert


class Checkpoint(msgspec.Struct, frozen=True):
    """The last input applied: its sequence number and the block it belongs to (if any)."""

    seq: int
    block: int | None


class CheckpointRecord(msgspec.Struct, frozen=True):
    """The stored form of the checkpoint, plus the score the next outbox entry gets.

    Decoding it as a plain `Checkpoint` also works (unknown fields are ignored).
    """

    seq: int
    block: int | None
    outbox_next: int = 0

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(seq=self.seq, block=self.block)


@dataclass(frozen=True)
class StoreLayout:
    """The key names for one namespace (one collector instance's private keys)."""

    namespace: str = DEFAULT_NAMESPACE

    @property
    def state(self) -> str:
        return f"{self.namespace}:state"

    @property
    def checkpoint(self) -> str:
        return f"{self.namespace}:checkpoint"

    @property
    def replication_probe(self) -> str:
        """A counter the outbox increments before its WAIT (SEQ_REDIS_MIN_REPLICAS)."""
        return f"{self.namespace}:outbox:replicated"

    @property
    def outbox(self) -> str:
        return f"{self.namespace}:outbox"

    @property
    def outbox_pending(self) -> str:
        return f"{self.namespace}:outbox:pending"

    @property
    def lease(self) -> str:
        return f"{self.namespace}:lease"

    @property
    def lease_token(self) -> str:
        return f"{self.namespace}:lease:token"


_record_decoder = msgspec.json.Decoder(CheckpointRecord)
_entry_decoder = msgspec.json.Decoder(OutboxEntry)


def encode_record(record: CheckpointRecord) -> bytes:
    """Checkpoint record -> the bytes stored under `<ns>:checkpoint` (deterministic)."""
    return msgspec.json.encode(record)


def decode_record(raw: bytes | None) -> CheckpointRecord | None:
    """Bytes stored under `<ns>:checkpoint` (or None if absent) -> the record."""
    return None if raw is None else _record_decoder.decode(raw)


def encode_entry(entry: OutboxEntry) -> bytes:
    """Outbox effect -> tagged JSON (`{"type":"relayer",...}` or `{"type":"alert",...}`)."""
    return msgspec.json.encode(entry)


def decode_entry(raw: bytes) -> OutboxEntry:
    """Tagged JSON written by `encode_entry` -> the outbox effect."""
    return _entry_decoder.decode(raw)
