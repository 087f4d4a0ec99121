"""Decoding raw ProtocolState logs into typed events, deterministically.

A log either decodes into one of the four events or into a `Refusal` naming why, never an
exception: logs from another address, unknown topic0 (including the DataMarket look-alike
events without the address argument), malformed topics or data.
"""

from __future__ import annotations

import msgspec
from eth_utils.crypto import keccak


def _topic0(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


EPOCH_RELEASED = _topic0("EpochReleased(address,uint256,uint256,uint256,uint256)")
SNAPSHOT_BATCH_SUBMITTED = _topic0("SnapshotBatchSubmitted(address,string,uint256,uint256)")
BATCH_SUBMISSIONS_COMPLETED = _topic0("BatchSubmissionsCompleted(address,uint256,uint256)")
DAY_STARTED = _topic0("DayStartedEvent(address,uint256,uint256)")


class EpochReleased(msgspec.Struct, frozen=True):
    market: str
    epoch: int
    begin: int
    end: int
    timestamp: int


class SnapshotBatchSubmitted(msgspec.Struct, frozen=True):
    market: str
    batch_cid: str
    epoch: int
    timestamp: int


class BatchSubmissionsCompleted(msgspec.Struct, frozen=True):
    market: str
    epoch: int
    timestamp: int


class DayStarted(msgspec.Struct, frozen=True):
    market: str
    day: int
    timestamp: int


class Refusal(msgspec.Struct, frozen=True):
    reason: str
    detail: str


# Epoch and day ids are uint256 on chain; the state stores them in 64-bit msgpack ints.
MAX_ID = 2**62

Event = EpochReleased | SnapshotBatchSubmitted | BatchSubmissionsCompleted | DayStarted

# topic0 -> (name, number of topics, data types)
_SCHEMAS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    EPOCH_RELEASED: ("EpochReleased", 3, ("uint256", "uint256", "uint256")),
    SNAPSHOT_BATCH_SUBMITTED: ("SnapshotBatchSubmitted", 3, ("string", "uint256")),
    BATCH_SUBMISSIONS_COMPLETED: ("BatchSubmissionsCompleted", 3, ("uint256",)),
    DAY_STARTED: ("DayStartedEvent", 2, ("uint256", "uint256")),
}


def _hex_bytes(text: str) -> bytes | None:
    if not text.startswith(("0x", "0X")) or not text[2:].isalnum():  # fromhex skips spaces
        return None if text not in ("0x", "0X") else b""
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        return None


def _topic_word(text: str) -> bytes | None:
    raw = _hex_bytes(text)
    return raw if raw is not None and len(raw) == 32 else None


def decode_event(topics: list[str], data: str) -> Event | Refusal:
    """Decode a ProtocolState log (address already checked) from its topics and data."""
    if not topics:
        return Refusal("unknown_topic", "log without topics")
    schema = _SCHEMAS.get(topics[0].lower())
    if schema is None:
        return Refusal("unknown_topic", f"topic0 {topics[0][:80]} is not a collected event")
    name, n_topics, types = schema
    if len(topics) != n_topics:
        return Refusal("malformed_log", f"{name}: {len(topics)} topics, expected {n_topics}")
    words = [_topic_word(t) for t in topics[1:]]
    if any(w is None for w in words):
        return Refusal("malformed_log", f"{name}: a topic is not a 32-byte hex word")
    market_word = words[0]
    assert market_word is not None
    if any(market_word[:12]):
        return Refusal("malformed_log", f"{name}: market topic is not an address")
    market = "0x" + market_word[12:].hex()
    raw = _hex_bytes(data)
    if raw is None:
        return Refusal("malformed_log", f"{name}: data is not 0x-prefixed hex")
    indexed = int.from_bytes(words[1], "big") if len(words) > 1 and words[1] is not None else 0
    if indexed > MAX_ID:
        return Refusal("malformed_log", f"{name}: epoch id above {MAX_ID}")
    if name == "SnapshotBatchSubmitted":
        decoded = _string_and_uint(raw)
        if isinstance(decoded, str):
            return Refusal("malformed_log", f"{name}: {decoded}")
        return SnapshotBatchSubmitted(market, decoded[0], indexed, decoded[1])
    if len(raw) != 32 * len(types):
        return Refusal(
            "malformed_log", f"{name}: {len(raw)} data bytes, expected {32 * len(types)}"
        )
    v = [int.from_bytes(raw[i : i + 32], "big") for i in range(0, len(raw), 32)]
    if name == "EpochReleased":
        return EpochReleased(market, indexed, v[0], v[1], v[2])
    if name == "BatchSubmissionsCompleted":
        return BatchSubmissionsCompleted(market, indexed, v[0])
    if v[0] > MAX_ID:
        return Refusal("malformed_log", f"{name}: day id above {MAX_ID}")
    return DayStarted(market, v[0], v[1])


def _string_and_uint(raw: bytes) -> tuple[str, int] | str:
    """Strict ABI decoding of `(string, uint256)`, as Solidity encodes it; else why not.

    By hand rather than with eth_abi (which the tests use as the oracle): eth_abi costs about
    40 us a log, a fifth of a replay's time; the layout is fixed and small.
    """
    if len(raw) < 96 or len(raw) % 32:
        return f"{len(raw)} data bytes, not a (string, uint256) encoding"
    if int.from_bytes(raw[0:32], "big") != 64:
        return "string offset is not 64"
    length = int.from_bytes(raw[64:96], "big")
    if len(raw) != 96 + (length + 31) // 32 * 32:
        return f"{len(raw)} data bytes for a string of {length} bytes"
    if any(raw[96 + length :]):
        return "non-zero padding after the string"
    try:
        text = raw[96 : 96 + length].decode("utf-8")
    except UnicodeDecodeError:
        return "string is not UTF-8"
    return text, int.from_bytes(raw[32:64], "big")
