"""Chains for the contract tests: the deterministic eth-tester and a private anvil node.

`chain` runs a test on both: it yields an AsyncWeb3 on a fresh eth-tester, or on the module's
anvil node (a fresh contract is deployed by each test, so sharing the node is harmless).
Without the anvil binary the anvil half is skipped, except under CI=true where it fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from contractkit import GENESIS, missing_tool
from web3 import AsyncHTTPProvider, AsyncWeb3

from sim.anvil import Anvil, AnvilMissing
from sim.ethtester import async_web3, deterministic_tester


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[Anvil]:
    try:
        node = Anvil(timestamp=GENESIS)
    except AnvilMissing as exc:
        missing_tool(str(exc))
    with node:
        yield node


@pytest.fixture(params=["ethtester", "anvil"])
async def chain(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[AsyncWeb3[Any]]:
    if request.param == "ethtester":
        yield async_web3(deterministic_tester(seed=1, genesis_timestamp=GENESIS, block_time=2))
        return
    node: Anvil = request.getfixturevalue("anvil_node")
    provider = AsyncHTTPProvider(node.url)
    try:
        yield AsyncWeb3(provider)
    finally:
        await provider.disconnect()
