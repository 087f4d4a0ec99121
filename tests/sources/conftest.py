"""Fixtures for the chain-source tests: a fresh anvil node per test (about 50 ms to start)
and a fresh in-process eth-tester chain. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sourcekit import AnvilChain, EthTesterChain, start_anvil


@pytest.fixture
def anvil() -> Iterator[AnvilChain]:
    node = start_anvil()
    try:
        yield AnvilChain(node)
    finally:
        node.stop()


@pytest.fixture
def tester() -> EthTesterChain:
    return EthTesterChain()
