"""A deterministic in-process chain: eth-tester on py-evm with pinned time and randomness.

Stock eth-tester is not reproducible: the genesis timestamp and every block's timestamp come
from the wall clock, and each post-merge block gets `mix_hash = os.urandom(32)`. Here:

- genesis is built with `timestamp = genesis_timestamp`;
- the pending block always has `timestamp = head.timestamp + block_time` and a `mix_hash`
  drawn from `random.Random(seed)` (so PREVRANDAO is seeded too), re-pinned after every mined
  block, revert and reset;
- blocks are mined with that pending header unchanged.

Same seed, genesis timestamp, block time and sequence of calls -> identical block hashes.
Every block (one per transaction with auto-mining, or from `mine`) is `block_time` seconds
after its parent; `EthereumTester.time_travel(t)` mines one block at exactly `t` (t must not
be earlier than the pending block's timestamp).
"""

from __future__ import annotations

import random
from typing import Any

from eth.vm.forks.cancun.state import get_total_blob_gas
from eth_tester import EthereumTester  # type: ignore[import-untyped]
from eth_tester.backends.pyevm.main import (  # type: ignore[import-untyped]
    ZERO_ADDRESS,
    PyEVMBackend,
)
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

DEFAULT_GENESIS_TIMESTAMP = 1_700_000_000  # 2023-11-14T22:13:20Z
DEFAULT_BLOCK_TIME = 2


class SeededPyEVMBackend(PyEVMBackend):  # type: ignore[misc]
    """PyEVMBackend whose block timestamps and mix hashes depend only on its arguments.

    `seed` seeds the mix_hash RNG; `genesis_timestamp` is block 0's timestamp (any value, past
    or future); `block_time` (>= 1 s) is the spacing of every later block.
    """

    def __init__(self, seed: int, genesis_timestamp: int, block_time: int) -> None:
        if block_time < 1:
            raise ValueError(f"block_time must be >= 1 s, got {block_time}")
        self.seed = seed
        self.genesis_timestamp = genesis_timestamp
        self.block_time = block_time
        self._rng = random.Random(seed)
        super().__init__(genesis_parameters=self._genesis_params())

    def _genesis_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.generate_genesis_params(
            overrides={"timestamp": self.genesis_timestamp}
        )
        return params

    def _pin_pending(self) -> None:
        """Pending header := head timestamp + block_time, next mix_hash from the RNG."""
        head = self.chain.get_canonical_head()
        self.chain.header = self.chain.header.copy(
            timestamp=head.timestamp + self.block_time, mix_hash=self._rng.randbytes(32)
        )

    def reset_to_genesis(
        self, genesis_params: dict[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> None:
        """Back to the pinned genesis (unless other params are given), RNG reseeded."""
        self._rng = random.Random(self.seed)
        super().reset_to_genesis(genesis_params or self._genesis_params(), *args, **kwargs)
        self._pin_pending()

    def revert_to_snapshot(self, snapshot: bytes) -> None:
        super().revert_to_snapshot(snapshot)
        self._pin_pending()

    def time_travel(self, to_timestamp: int) -> int:
        """Mine one block with timestamp `to_timestamp` (later than the head's)."""
        self.chain.header = self.chain.header.copy(timestamp=to_timestamp)
        self.mine_blocks()
        return to_timestamp

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = ZERO_ADDRESS) -> tuple[bytes, ...]:
        """Mine `num_blocks` blocks on the pinned pending header; returns their raw hashes."""
        hashes = []
        for _ in range(num_blocks):
            pending = self.chain.get_block().transactions
            blob_gas = sum(get_total_blob_gas(tx) for tx in pending)
            block = self.chain.mine_block(coinbase=coinbase, blob_gas_used=blob_gas)
            hashes.append(block.hash)
            self._pin_pending()
        return tuple(hashes)


def deterministic_tester(
    seed: int,
    genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
    block_time: int = DEFAULT_BLOCK_TIME,
) -> EthereumTester:
    """An auto-mining EthereumTester on a `SeededPyEVMBackend(seed, genesis_timestamp,
    block_time)`: ten funded accounts (keys 1..10), chain id 131277322940537."""
    return EthereumTester(backend=SeededPyEVMBackend(seed, genesis_timestamp, block_time))


def mine(tester: EthereumTester, n: int = 1) -> list[str]:
    """Mine `n` empty blocks, each `block_time` after its parent; their hashes, 0x-hex."""
    hashes: list[str] = tester.mine_blocks(n)
    return hashes


def async_web3(tester: EthereumTester) -> AsyncWeb3[AsyncEthereumTesterProvider]:
    """An AsyncWeb3 talking to `tester` in process (no JSON-RPC batching: the provider
    refuses batch requests)."""
    provider = AsyncEthereumTesterProvider()
    provider.ethereum_tester = tester  # the constructor builds its own, unseeded tester
    return AsyncWeb3(provider)
