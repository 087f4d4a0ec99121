"""Chain sources: JSON-RPC endpoints (web3.py AsyncWeb3) -> the core's inputs.

- `rpc.RpcPool`: endpoints with failover, lag tracking, JSON-RPC batches, request counts.
- `blocks`: headers by batch, logs by adaptive `eth_getLogs` ranges (`LogRanges`).
- `follower.ChainFollower`: `Block`, `Log`, `Rewind` inputs in chain order, reorg-aware.
- `heads.HeadWatcher`: newHeads subscription on a WebSocket endpoint, else polling.
"""

from seqcollector.sources.blocks import LogRanges, fetch_headers
from seqcollector.sources.follower import ChainFollower
from seqcollector.sources.heads import HeadWatcher
from seqcollector.sources.retrying import Backoff
from seqcollector.sources.rpc import RpcError, RpcPool, SourceError, TransportError

__all__ = [
    "Backoff",
    "ChainFollower",
    "HeadWatcher",
    "LogRanges",
    "RpcError",
    "RpcPool",
    "SourceError",
    "TransportError",
    "fetch_headers",
]
