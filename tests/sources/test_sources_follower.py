"""ChainFollower end to end: order, confirmations, logs, reorgs (anvil snapshot/revert),
restarts with known hashes, failover, retries, inconsistent answers and ws newHeads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from sourcekit import (
    MARKET,
    OTHER_TOPIC,
    AnvilChain,
    EthTesterChain,
    Item,
    block_numbers,
    collect,
    saw_block,
)
from structlog.testing import capture_logs
from tcpcut import TcpCutter

from seqcollector.core.abi import EPOCH_RELEASED, decode_event
from seqcollector.core.inputs import Block, Log, Rewind
from seqcollector.sources.follower import ChainFollower
from seqcollector.sources.retrying import Backoff
from seqcollector.sources.rpc import RpcPool
from sim.rpc_proxy import RpcProxy

pytestmark = pytest.mark.anyio

FAST = Backoff(first_s=0.02, max_s=0.1)


def epochs_of(items: list[Item]) -> list[int]:
    out = []
    for item in items:
        if isinstance(item, Log):
            event = decode_event(item.topics, item.data)
            out.append(getattr(event, "epoch", -1))
    return out


def check_chain_order(items: list[Item]) -> None:
    """Blocks consecutive; each log right after its block, by log index; parents link."""
    current: Block | None = None
    last_index = -1
    for item in items:
        if isinstance(item, Block):
            if current is not None:
                assert item.number == current.number + 1
                assert item.parent_hash == current.hash
            current, last_index = item, -1
        elif isinstance(item, Log):
            assert current is not None and item.block_number == current.number
            assert item.block_hash == current.hash and item.log_index > last_index
            last_index = item.log_index
        else:
            raise AssertionError(f"unexpected {item}")


def rewound_then(number: int) -> Callable[[list[Item]], bool]:
    """Stop at block `number` after a Rewind."""

    def stop(items: list[Item]) -> bool:
        return any(isinstance(i, Rewind) for i in items) and saw_block(number)(items)

    return stop


def canonical(anvil: AnvilChain, items: list[Item]) -> None:
    for item in items:
        if isinstance(item, Block):
            assert item.hash == anvil.block(item.number)["hash"]


async def test_every_block_once_in_order_with_confirmations(anvil: AnvilChain) -> None:
    anvil.node.mine(30)
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(
            pool, MARKET, confirmations=3, start_block=0, poll_interval_s=0.05, range_blocks=7
        )
        items = await collect(follower, saw_block(27))
        assert block_numbers(items) == list(range(28)) and follower.chain_head == 30
        check_chain_order(items)
        canonical(anvil, items)

        # at the head: new blocks as they come, nothing past head - confirmations
        anvil.node.mine(2)  # head 32
        follower2 = ChainFollower(
            pool,
            MARKET,
            confirmations=3,
            known=[(b.number, b.hash) for b in items if isinstance(b, Block)],
            poll_interval_s=0.05,
        )
        more: list[Item] = []
        with anyio.move_on_after(1.0):
            await collect(follower2, lambda seen: False, on_item=lambda i, _: more.append(i))
        assert block_numbers(more) == [28, 29]


async def test_starts_at_the_confirmed_head_without_history(anvil: AnvilChain) -> None:
    anvil.node.mine(50)
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, MARKET, confirmations=2, poll_interval_s=0.05)

        async def mine(item: Item, seen: list[Item]) -> None:
            await anyio.to_thread.run_sync(anvil.node.mine, 1)

        items = await collect(follower, saw_block(51), on_item=mine)
        assert block_numbers(items) == [48, 49, 50, 51]


async def test_logs_follow_their_block_on_anvil(anvil: AnvilChain) -> None:
    emitter, other = anvil.deploy(), anvil.deploy()
    anvil.emit(emitter, 1)
    anvil.emit(emitter, 2, topic0=OTHER_TOPIC)
    anvil.emit(other, 3)
    anvil.emit_together(emitter, [4, 5, 6])
    anvil.node.mine(3)
    head = anvil.head()
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, emitter, start_block=0, range_blocks=4)
        items = await collect(follower, saw_block(head))
    assert block_numbers(items) == list(range(head + 1))
    assert epochs_of(items) == [1, 4, 5, 6]
    check_chain_order(items)
    assert all(log.topics[0] == EPOCH_RELEASED for log in items if isinstance(log, Log))


async def test_follows_eth_tester_in_process(tester: EthTesterChain) -> None:
    emitter = await tester.deploy()
    for epoch in range(1, 6):
        await tester.emit(emitter, epoch)
        await tester.emit(emitter, 100 + epoch, topic0=OTHER_TOPIC)
    await tester.mine(4)
    async with RpcPool([], providers=[tester.provider]) as pool:
        head = await pool.head()
        follower = ChainFollower(pool, emitter, start_block=0, range_blocks=5, poll_interval_s=0.05)

        async def more(item: Item, seen: list[Item]) -> None:
            if isinstance(item, Block) and item.number == head:
                await tester.emit(emitter, 6)

        items = await collect(follower, saw_block(head + 1), on_item=more)
    check_chain_order(items)
    assert block_numbers(items) == list(range(head + 2))
    assert epochs_of(items) == [1, 2, 3, 4, 5]  # epoch 6's block is the last item: no logs yet
    for item in items:
        if isinstance(item, Block):
            block = await tester.w3.eth.get_block(item.number)
            assert item.hash == "0x" + block["hash"].hex()


async def test_reorg_to_a_longer_branch(anvil: AnvilChain) -> None:
    emitter = anvil.deploy()  # block 1
    anvil.node.mine(9)
    snapshot = anvil.node.snapshot()  # at block 10
    for epoch in range(1, 6):
        anvil.emit(emitter, epoch)  # blocks 11..15, lost in the reorg
    anvil.node.mine(5)  # to 20
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, emitter, start_block=0, poll_interval_s=0.05)
        reorged = False

        async def reorg(item: Item, seen: list[Item]) -> None:
            nonlocal reorged
            if isinstance(item, Block) and item.number == 20 and not reorged:
                reorged = True
                anvil.node.revert(snapshot)
                for epoch in range(50, 53):
                    anvil.emit(emitter, epoch)  # blocks 11..13 of the new branch
                anvil.node.mine(12, interval_s=7)  # to 25: different timestamps, hashes

        items = await collect(follower, saw_block(25), on_item=reorg)
    first = items.index(next(i for i in items if isinstance(i, Block) and i.number == 20))
    rewind_at = next(k for k, i in enumerate(items) if isinstance(i, Rewind))
    assert items[rewind_at] == Rewind(10) and rewind_at == first + 1
    assert follower.rewinds == 1 and follower.deep_rewinds == 0
    before, after = items[:rewind_at], items[rewind_at + 1 :]
    assert block_numbers(before) == list(range(21)) and epochs_of(before) == [1, 2, 3, 4, 5]
    assert block_numbers(after) == list(range(11, 26)) and epochs_of(after) == [50, 51, 52]
    check_chain_order(before)
    check_chain_order(after)
    canonical(anvil, after)
    assert after[0].parent_hash == before[10].hash  # type: ignore[union-attr]


async def test_reorg_to_a_shorter_branch_is_seen_while_waiting(anvil: AnvilChain) -> None:
    anvil.node.mine(10)
    snapshot = anvil.node.snapshot()
    anvil.node.mine(10)  # to 20
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, MARKET, start_block=0, poll_interval_s=0.05)
        reorged = False

        async def reorg(item: Item, seen: list[Item]) -> None:
            nonlocal reorged
            if isinstance(item, Block) and item.number == 20 and not reorged:
                reorged = True
                anvil.node.revert(snapshot)
                anvil.node.mine(5, interval_s=9)  # head 15 < 20, never longer

        items = await collect(follower, rewound_then(15), on_item=reorg)
    rewinds = [i for i in items if isinstance(i, Rewind)]
    assert rewinds == [Rewind(10)]
    after = items[items.index(rewinds[0]) + 1 :]
    assert block_numbers(after) == list(range(11, 16))
    canonical(anvil, after)


async def test_restart_with_known_hashes_detects_a_reorg_across_restart(
    anvil: AnvilChain,
) -> None:
    anvil.node.mine(12)
    known = [(n, anvil.block(n)["hash"]) for n in range(4, 11)]
    async with RpcPool([anvil.node.url]) as pool:
        # same chain: continue after the last known block, no rewind
        items = await collect(ChainFollower(pool, MARKET, known=known), saw_block(12))
        assert block_numbers(items) == [11, 12] and not any(isinstance(i, Rewind) for i in items)
        # blocks 9 and 10 were replaced while we were down
        stale = [*known[:5], (9, "0x" + "01" * 32), (10, "0x" + "02" * 32)]
        items = await collect(ChainFollower(pool, MARKET, known=stale), saw_block(12))
        assert items[0] == Rewind(8) and block_numbers(items) == [9, 10, 11, 12]


async def test_reorg_deeper_than_history_rewinds_past_it(anvil: AnvilChain) -> None:
    anvil.node.mine(5)
    snapshot = anvil.node.snapshot()
    anvil.node.mine(10)  # to 15
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(
            pool, MARKET, start_block=0, max_reorg_depth=3, poll_interval_s=0.05
        )
        reorged = False

        async def reorg(item: Item, seen: list[Item]) -> None:
            nonlocal reorged
            if isinstance(item, Block) and item.number == 15 and not reorged:
                reorged = True
                anvil.node.revert(snapshot)
                anvil.node.mine(12, interval_s=5)  # to 17, forked at 5

        with capture_logs() as logs:
            items = await collect(follower, saw_block(17), on_item=reorg)
    rewinds = [i for i in items if isinstance(i, Rewind)]
    # history: blocks 12..15, checked 13..15, none matched; then the anchors 12, 8 (replaced)
    # and 0 (still canonical). Old code: Rewind(12), a block of the replaced chain, and the
    # new block 13 never linked to what the core held
    assert rewinds == [Rewind(0)]
    assert follower.deep_rewinds == 1 and follower.chain_resets == 0
    after = items[items.index(rewinds[0]) + 1 :]
    assert block_numbers(after) == list(range(1, 18))
    check_chain_order(after)
    canonical(anvil, after)
    assert after[0].parent_hash == anvil.block(0)["hash"]  # type: ignore[union-attr]
    [deep] = [e for e in logs if e["event"] == "reorg_deeper_than_history"]
    assert deep["rewind_to"] == 0 and deep["depth"] == 15


@pytest.mark.parametrize("fault", ["http_500", "stall", "random"])
async def test_failover_misses_nothing(anvil: AnvilChain, fault: str) -> None:
    emitter = anvil.deploy()
    for epoch in range(1, 21):
        anvil.emit(emitter, epoch)
    anvil.node.mine(30)
    head = anvil.head()
    with RpcProxy(anvil.node.url, seed=7) as proxy:
        if fault == "http_500":
            proxy.error_rate = 1.0
        elif fault == "stall":
            proxy.stall_rate, proxy.stall_s = 1.0, 2.0
        else:
            proxy.error_rate, proxy.stall_rate, proxy.stall_s = 0.3, 0.1, 1.0
        demote_s = 0.05 if fault == "random" else 30.0
        async with RpcPool(
            [proxy.url, anvil.node.url], request_timeout_s=0.3, demote_s=demote_s
        ) as pool:
            follower = ChainFollower(
                pool, emitter, start_block=0, range_blocks=4, poll_interval_s=0.05, retry=FAST
            )
            items = await collect(follower, saw_block(head), timeout_s=40)
            bad, good = pool.endpoints
            if fault != "random":
                assert pool.stats["requests"][bad] == 1  # demoted at once, not asked again
                assert pool.health()[0]["demoted"]
            assert pool.stats["requests"][good] > 0
    assert block_numbers(items) == list(range(head + 1))
    assert epochs_of(items) == list(range(1, 21))
    check_chain_order(items)


async def test_failures_are_retried_and_logged_until_the_node_answers(anvil: AnvilChain) -> None:
    anvil.node.mine(8)
    with RpcProxy(anvil.node.url) as proxy:
        async with RpcPool([proxy.url], demote_s=0.05) as pool:
            follower = ChainFollower(
                pool, MARKET, start_block=0, range_blocks=3, poll_interval_s=0.05, retry=FAST
            )

            async def outage(item: Item, seen: list[Item]) -> None:
                if isinstance(item, Block) and item.number == 2:
                    proxy.error_rate = 1.0

                    async def recover() -> None:
                        await anyio.sleep(0.5)
                        proxy.error_rate = 0.0

                    tg.start_soon(recover)

            with capture_logs() as logs:
                async with anyio.create_task_group() as tg:
                    items = await collect(follower, saw_block(8), on_item=outage)
    assert block_numbers(items) == list(range(9))
    failures = [e for e in logs if e["event"] == "chain_source_failure"]
    assert failures, "each failure is logged"
    assert failures[0]["operation"] == "read_range"
    assert failures[0]["first_block"] == 3 and failures[0]["last_block"] == 5
    assert failures[0]["endpoint"] == pool.endpoints[0] and failures[0]["log_level"] == "error"


class ForkedLogsProxy(RpcProxy):
    """Answers the first getLogs with a wrong blockHash (as if from another fork)."""

    forged = 0

    def _call(self, call: dict[str, Any]) -> Any:
        reply = super()._call(call)
        if call.get("method") == "eth_getLogs" and not self.forged and reply.get("result"):
            self.forged += 1
            reply["result"][0]["blockHash"] = "0x" + "ee" * 32
        return reply


async def test_logs_from_another_fork_make_it_read_the_range_again(anvil: AnvilChain) -> None:
    emitter = anvil.deploy()
    for epoch in (1, 2, 3):
        anvil.emit(emitter, epoch)
    anvil.node.mine(1)  # stop at a block after the last log
    proxy = ForkedLogsProxy(anvil.node.url)
    with proxy:
        async with RpcPool([proxy.url]) as pool:
            follower = ChainFollower(pool, emitter, start_block=0, retry=FAST)
            items = await collect(follower, saw_block(anvil.head()))
    assert proxy.forged == 1 and follower.refetches == 1
    assert epochs_of(items) == [1, 2, 3]
    check_chain_order(items)


async def test_new_heads_over_websocket(anvil: AnvilChain) -> None:
    anvil.node.mine(5)
    async with RpcPool([anvil.node.ws_url]) as pool:
        # polling every 60 s: within the timeout only newHeads can wake the follower up
        follower = ChainFollower(pool, MARKET, poll_interval_s=60)

        async def mine(item: Item, seen: list[Item]) -> None:
            await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(anvil.node.mine, 1)

        items = await collect(follower, saw_block(10), timeout_s=10, on_item=mine)
        assert block_numbers(items) == [5, 6, 7, 8, 9, 10]
        assert follower.watcher.notifications >= 4
        assert pool.stats["calls"]["eth_subscribe"] == 1
        assert not follower.watcher.subscribed  # closing the stream unsubscribed
        assert pool.stats["calls"]["eth_unsubscribe"] == 1


async def test_websocket_connection_lost_reconnects_and_resubscribes(anvil: AnvilChain) -> None:
    anvil.node.mine(5)
    async with anyio.create_task_group() as tg:
        cutter = TcpCutter(anvil.node.port)
        await tg.start(cutter.serve)
        async with RpcPool([f"ws://127.0.0.1:{cutter.port}"], demote_s=0.2) as pool:
            follower = ChainFollower(pool, MARKET, poll_interval_s=60)

            async def mine(item: Item, seen: list[Item]) -> None:
                if isinstance(item, Block) and item.number == 7:
                    await anyio.sleep(0.1)
                    cutter.cut()  # the ws connection drops while the follower waits
                await anyio.sleep(0.1)
                await anyio.to_thread.run_sync(anvil.node.mine, 1)

            items = await collect(follower, saw_block(10), timeout_s=15, on_item=mine)
            assert block_numbers(items) == [5, 6, 7, 8, 9, 10]
            assert cutter.connections == 2  # reconnected once
            assert pool.stats["calls"]["eth_subscribe"] == 2  # and subscribed again
        tg.cancel_scope.cancel()


class FlakyParentProxy(RpcProxy):
    """Answers block `number` once with a wrong parent hash (one endpoint of a load balancer
    on another fork for a moment)."""

    def __init__(self, upstream: str, number: int) -> None:
        super().__init__(upstream)
        self.number, self.forged = number, 0

    def _call(self, call: dict[str, Any]) -> Any:
        reply = super()._call(call)
        params = call.get("params") or []
        if (
            call.get("method") == "eth_getBlockByNumber"
            and params[0] == hex(self.number)
            and not self.forged
        ):
            self.forged += 1
            reply["result"]["parentHash"] = "0x" + "dd" * 32
        return reply


async def test_a_parent_mismatch_that_does_not_hold_is_not_a_rewind(anvil: AnvilChain) -> None:
    anvil.node.mine(12)
    proxy = FlakyParentProxy(anvil.node.url, number=8)
    with proxy:
        async with RpcPool([proxy.url]) as pool:
            follower = ChainFollower(pool, MARKET, start_block=0, range_blocks=4, retry=FAST)
            items = await collect(follower, saw_block(12))
    assert proxy.forged == 1
    assert block_numbers(items) == list(range(13)) and follower.rewinds == 0
    check_chain_order(items)


async def test_head_dropping_below_all_history_rewinds_to_an_anchor(anvil: AnvilChain) -> None:
    """A reset far below everything remembered (old code: `_check_below_head` found none
    of its blocks at the new head and waited in silence, forever)."""
    anvil.node.mine(3)
    snapshot = anvil.node.snapshot()  # at block 3
    anvil.node.mine(37)  # to 40
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(
            pool, MARKET, start_block=0, max_reorg_depth=3, poll_interval_s=0.05, retry=FAST
        )
        reset = False

        async def drop(item: Item, seen: list[Item]) -> None:
            nonlocal reset
            if isinstance(item, Block) and item.number == 40 and not reset:
                reset = True
                anvil.node.revert(snapshot)
                anvil.node.mine(4, interval_s=11)  # head 7, far below 37..40

        with capture_logs() as logs:
            items = await collect(follower, rewound_then(7), on_item=drop)
    rewinds = [i for i in items if isinstance(i, Rewind)]
    assert rewinds == [Rewind(0)]  # anchors 40, 32 (gone), 0: no block 1..3 is an anchor
    after = items[items.index(rewinds[0]) + 1 :]
    assert block_numbers(after) == list(range(1, 8))
    check_chain_order(after)
    canonical(anvil, after)
    assert any(e["event"] == "reorg_deeper_than_history" for e in logs)


async def test_restart_on_another_chain_rewinds_below_everything(anvil: AnvilChain) -> None:
    """Nothing the collector remembers is on the chain (RPC_NODES now point at another
    chain, a reset to a new genesis): Rewind(-1), then the chain from its first block."""
    anvil.node.mine(20)
    fake = [(n, "0x" + f"{n:02x}" * 32) for n in range(10, 14)]
    anchors = [(5, "0x" + "05" * 32), (8, "0x" + "08" * 32)]
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, MARKET, known=fake, anchors=anchors, retry=FAST)
        with capture_logs() as logs:
            items = await collect(follower, saw_block(20))
    assert items[0] == Rewind(-1)
    assert block_numbers(items[1:]) == list(range(5, 21))  # from the first block processed
    check_chain_order(items[1:])
    canonical(anvil, items[1:])
    assert follower.chain_resets == 1 and follower.deep_rewinds == 1
    [replaced] = [e for e in logs if e["event"] == "chain_replaced"]
    assert replaced["resume_from"] == 5 and replaced["log_level"] == "error"


async def test_start_block_beyond_the_head_is_logged_while_waiting(anvil: AnvilChain) -> None:
    """SEQ_START_BLOCK beyond the head: 'waiting for the chain to reach block S, head H',
    at once and then every wait_log_s (old code: a silent wait)."""
    anvil.node.mine(2)
    async with RpcPool([anvil.node.url]) as pool:
        follower = ChainFollower(pool, MARKET, start_block=8, poll_interval_s=0.05, wait_log_s=0.2)
        mined = False

        async def mine_later() -> None:
            nonlocal mined
            await anyio.sleep(0.7)
            anvil.node.mine(6)  # to 8
            mined = True

        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(mine_later)
                items = await collect(follower, saw_block(8))
    assert mined and block_numbers(items) == [8]
    waits = [e for e in logs if e["event"] == "waiting_for_chain"]
    assert 2 <= len(waits) <= 6
    assert waits[0]["detail"] == "waiting for the chain to reach block 8, head 2"
    assert waits[0]["log_level"] == "info"
