"""Shared e2e fixtures: a private anvil (CI fails instead of skipping without it), a
recording relayer, and `world` (the contract deployed on that anvil, 3 epochs a day, the
session's Redis); this folder's helper modules (livekit, silent) on the import path."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sim.anvil import Anvil, AnvilMissing
from sim.relayer import Relayer

sys.path.insert(0, str(Path(__file__).parent))

from livekit import LiveWorld, deployed_world


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    try:
        node = Anvil(timestamp=1_800_000_000)
    except AnvilMissing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    with node:
        yield node


@pytest.fixture
def relayer() -> Iterator[Relayer]:
    with Relayer() as r:
        yield r


@pytest.fixture
async def world(anvil: Anvil, redis_url: str) -> AsyncIterator[LiveWorld]:
    async with deployed_world(anvil, redis_url) as w:
        yield w
