"""What the chain sources raise, and the one JSON-RPC value parser they all share.

`SourceError`: retrying later may succeed (the follower retries these forever).
`RpcError`: a failed JSON-RPC request; `TransportError`: one with no usable answer.
"""

from __future__ import annotations

from typing import Any


class SourceError(Exception):
    """A chain source could not get what it asked for; retrying later may succeed."""


class FetchTimedOut(SourceError):
    """One attempt of a chain read (a range of headers and logs, a canonical check) took
    longer than BLOCK_FETCH_TIMEOUT; retried like any source failure."""


class RpcError(SourceError):
    """A failed JSON-RPC request. `code` is the JSON-RPC error code when the node answered
    with an error object, None when there was no usable answer (see `TransportError`)."""

    def __init__(
        self, endpoint: str, method: str, message: str, code: int | None = None, data: Any = None
    ) -> None:
        super().__init__(f"{method} on {endpoint}: {message}" + (f" (code {code})" if code else ""))
        self.endpoint = endpoint
        self.method = method
        self.message = message
        self.code = code
        self.data = data


class TransportError(RpcError):
    """No usable JSON-RPC answer: connection, HTTP status, timeout, malformed or unusable."""


def quantity(value: Any) -> int:
    """A JSON-RPC quantity: a 0x-hex string (nodes) or an int (eth-tester) -> int."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        return int(value, 16)
    raise ValueError(f"not a quantity: {value!r:.80}")
