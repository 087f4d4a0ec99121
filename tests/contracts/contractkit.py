"""Helpers shared by the contract tests (imported as `contractkit`, like tests/unit/corekit)."""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest

from seqcollector.core.abi import Event, Refusal, decode_event

GENESIS = 1_700_000_000
MARKET_A = "0x" + "a1" * 20
MARKET_B = "0x" + "b2" * 20


def missing_tool(reason: str) -> NoReturn:
    """Skip the test for a missing tool; under CI=true that is a failure instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def raw_logs(receipt: Any) -> list[tuple[list[str], str]]:
    """(topics, data) of each receipt log, as 0x-hex strings, in log order."""
    logs = sorted(receipt["logs"], key=lambda log: log["logIndex"])
    return [([t.to_0x_hex() for t in log["topics"]], log["data"].to_0x_hex()) for log in logs]


def decoded(receipt: Any) -> list[Event]:
    """Every log of the receipt decoded by seqcollector's decoder (none may be refused)."""
    events = [decode_event(topics, data) for topics, data in raw_logs(receipt)]
    refused = [e for e in events if isinstance(e, Refusal)]
    assert not refused, refused
    return [e for e in events if not isinstance(e, Refusal)]
