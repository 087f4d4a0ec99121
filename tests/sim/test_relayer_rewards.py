"""The simulated relayer's `POST /submitUpdateRewards`: the Go body accepted over real loopback
HTTP and recorded, every malformed body answered 400 and recorded as a protocol violation, the
auth token checked as for /submitBatchSize, and the accepted updates put on a real eth-tester
chain (DataMarket.eligibleNodesForDay reflects them): each distinct body once, in a canonical
order, again after a reorg replaced its block."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from sim.contract import DataMarketClient, ProtocolStateClient, deploy_protocol_state
from sim.ethtester import async_web3, deterministic_tester, mine
from sim.relayer import DISPATCHER_TOKEN, Relayer
from sim.reward_updates import UPDATE_REWARDS_FIELDS, problem_with_update_rewards
from sim.rpc_server import TesterRpcServer

MARKET = "0x0C2E22fe7526fAeF28E7A58c84f8723dEFcE200c"
PATH = "/submitUpdateRewards"


def body(**changes: Any) -> dict[str, Any]:
    """A valid Go body (Go's key order), with `changes` applied."""
    base: dict[str, Any] = {
        "dataMarketAddress": MARKET,
        "slotIDs": [1, 2, 7],
        "submissionsList": [10, 0, 3],
        "day": 2,
        "eligibleNodes": 0,
        "authToken": DISPATCHER_TOKEN,
    }
    return base | changes


async def post(url: str, payload: object, raw: bytes | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            data=raw if raw is not None else aiohttp.JsonPayload(payload),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        return response.status


@pytest.mark.anyio
async def test_valid_bodies_are_accepted_and_recorded() -> None:
    with Relayer(auth_token=DISPATCHER_TOKEN) as relayer:
        p2 = body(slotIDs=[], submissionsList=[], day=1, eligibleNodes=4)
        assert await post(relayer.url + PATH, body()) == 200
        assert await post(relayer.url + PATH, p2) == 200
        assert relayer.reward_updates() == [body(), p2]
        assert relayer.violations() == []
        assert [r.status for r in relayer.requests] == [200, 200]


BAD = {
    "non-ascending slotIDs": (
        body(slotIDs=[1, 7, 2]),
        "slotIDs not strictly ascending at index 2 (2 after 7)",
    ),
    "repeated slot": (body(slotIDs=[1, 2, 2]), "slotIDs not strictly ascending at index 2"),
    "lists of different lengths": (
        body(submissionsList=[10, 0]),
        "slotIDs has 3 entries, submissionsList 2",
    ),
    "lowercase market": (body(dataMarketAddress=MARKET.lower()), "is not an EIP-55 address"),
    "missing field": (
        {k: v for k, v in body().items() if k != "eligibleNodes"},
        "missing field eligibleNodes",
    ),
    "missing token": (
        {k: v for k, v in body().items() if k != "authToken"},
        "missing field authToken",
    ),
    "unknown field": (body(epochID=3), "unexpected field epochID"),
    "day 0": (body(day=0), "day = 0 is not an integer >= 1"),
    "a count as a string": (
        body(submissionsList=[10, "0", 3]),
        "submissionsList[1] = '0' is not an integer >= 0",
    ),
    "a boolean slot": (body(slotIDs=[True, 2, 7]), "slotIDs[0] = True is not an integer >= 1"),
    "not an object": ([1, 2], "body is a JSON list, not an object"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", sorted(BAD))
async def test_malformed_bodies_are_400_and_violations(case: str) -> None:
    payload, reason = BAD[case]
    with Relayer(fail_rate=1.0) as relayer:  # refused before any injected failure
        assert await post(relayer.url + PATH, payload) == 400
        assert relayer.reward_updates() == []
        [violation] = relayer.violations()
        assert violation.startswith(f"POST {PATH}: ") and reason in violation
        assert relayer.failures == 0


@pytest.mark.anyio
async def test_a_body_that_is_not_json_is_a_violation() -> None:
    with Relayer() as relayer:
        assert await post(relayer.url + PATH, None, raw=b"{not json") == 400
        [violation] = relayer.violations()
        assert "body is not JSON" in violation


@pytest.mark.anyio
async def test_token_checked_on_both_relayer_paths_when_configured() -> None:
    batch_size = {"dataMarketAddress": MARKET, "epochID": 3, "batchSize": 1}
    with Relayer(auth_token="right") as relayer:
        assert await post(relayer.url + PATH, body(authToken="wrong")) == 401
        assert await post(relayer.url + "/submitBatchSize", batch_size | {"authToken": "x"}) == 401
        assert (
            await post(relayer.url + "/submitBatchSize", batch_size | {"authToken": "right"}) == 200
        )
        assert await post(relayer.url + "/alerts", {"severity": "High"}) == 200  # not a call
        assert len(relayer.violations()) == 2
        assert all("authToken does not match" in v for v in relayer.violations())
    with Relayer() as relayer:  # no token configured: not checked (existing users)
        assert await post(relayer.url + "/submitBatchSize", batch_size | {"authToken": "x"}) == 200
        assert await post(relayer.url + PATH, body(authToken="any")) == 200


@pytest.mark.anyio
async def test_injected_failures_are_not_accepted_updates() -> None:
    with Relayer(fail_next=1, fail_path=PATH) as relayer:
        assert await post(relayer.url + PATH, body()) == 500
        assert await post(relayer.url + PATH, body()) == 200
        assert relayer.answered(PATH) == [(body(), False), (body(), True)]
        assert relayer.reward_updates() == [body()]
        assert relayer.violations() == []


slot_lists = st.lists(st.integers(1, 10_000), unique=True, max_size=30).map(sorted)


@given(
    slots=slot_lists,
    counts=st.data(),
    day=st.integers(1, 10**6),
    eligible=st.integers(0, 10_000),
)
def test_every_well_formed_body_is_valid(
    slots: list[int], counts: st.DataObject, day: int, eligible: int
) -> None:
    values = counts.draw(st.lists(st.integers(0, 10**9), min_size=len(slots), max_size=len(slots)))
    assert (
        problem_with_update_rewards(
            body(slotIDs=slots, submissionsList=values, day=day, eligibleNodes=eligible),
            DISPATCHER_TOKEN,
        )
        is None
    )


@given(slots=slot_lists.filter(lambda s: len(s) >= 2), data=st.data())
def test_any_disorder_or_missing_field_is_named(slots: list[int], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(slots).filter(lambda p: p != slots))
    problem = problem_with_update_rewards(body(slotIDs=shuffled, submissionsList=[1] * len(slots)))
    assert problem is not None and problem.startswith("slotIDs not strictly ascending")
    dropped = data.draw(st.sampled_from(UPDATE_REWARDS_FIELDS))
    assert problem_with_update_rewards({k: v for k, v in body().items() if k != dropped}) == (
        f"missing field {dropped}"
    )


# -- on chain --------------------------------------------------------------------------------


async def _chain() -> tuple[Any, ProtocolStateClient, str]:
    tester = deterministic_tester(seed=3, genesis_timestamp=1_700_000_000, block_time=2)
    w3 = async_web3(tester)
    client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
    return tester, client, await client.create_data_market_contract()


@pytest.mark.anyio
async def test_accepted_updates_land_on_chain_once_in_canonical_order() -> None:
    tester, client, market = await _chain()
    data_market = DataMarketClient(client.w3, market)
    p1_late = body(dataMarketAddress=market, slotIDs=[7, 9], submissionsList=[4, 5], day=1)
    p1_early = body(dataMarketAddress=market, slotIDs=[1, 2], submissionsList=[3, 1], day=1)
    p3 = body(dataMarketAddress=market, slotIDs=[1], submissionsList=[3], day=1, eligibleNodes=1)
    with Relayer() as relayer:
        for payload in (p1_late, p3, p1_early, p1_late):  # any order, one repeated
            assert await post(relayer.url + PATH, payload) == 200
        head = tester.get_block_by_number("latest")["number"]
        assert await relayer.submit_rewards(client) == 3
        assert await relayer.submit_rewards(client) == 0  # all on chain already
        assert relayer.chain_violations() == []
    assert await data_market.eligible_nodes_for_day(1) == 1
    counts = [await data_market.slot_submission_count(s, 1) for s in (1, 2, 7, 9)]
    assert counts == [3, 1, 4, 5]
    # (market, day, slots, counts, eligibleNodes) order: p3 ([1]) before p1_early ([1, 2])
    slots_sent = []
    for n in range(head + 1, head + 4):
        tx = tester.get_transaction_by_hash(tester.get_block_by_number(n)["transactions"][0])
        slots_sent.append(client.contract.decode_function_input(tx["data"])[1]["slotIds"])
    assert slots_sent == [[1], [1, 2], [7, 9]]


@pytest.mark.anyio
async def test_updates_replaced_by_a_reorg_are_sent_again() -> None:
    tester, client, market = await _chain()
    data_market = DataMarketClient(client.w3, market)
    before = tester.take_snapshot()
    p2 = body(dataMarketAddress=market, slotIDs=[], submissionsList=[], day=1, eligibleNodes=6)
    with Relayer() as relayer:
        assert await post(relayer.url + PATH, p2) == 200
        assert await relayer.submit_rewards(client) == 1
        assert await data_market.eligible_nodes_for_day(1) == 6
        tester.revert_to_snapshot(before)  # the update's block is gone ...
        assert await data_market.eligible_nodes_for_day(1) == 0
        assert await relayer.submit_rewards(client) == 1  # ... so it is sent again
        assert relayer.on_chain.replaced_by_reorg == 1
        assert await data_market.eligible_nodes_for_day(1) == 6
        tester.revert_to_snapshot(before)
        mine(tester, 3)  # a longer branch: same height, other hash
        assert await relayer.submit_rewards(client) == 1
        assert relayer.on_chain.replaced_by_reorg == 2
        assert await data_market.eligible_nodes_for_day(1) == 6


@pytest.mark.anyio
async def test_an_update_the_chain_refuses_is_a_violation_not_resent() -> None:
    _, client, _ = await _chain()
    stray = body(dataMarketAddress=to_checksum_address("0x" + "ab" * 20))  # not registered
    assert problem_with_update_rewards(stray) is None
    with Relayer() as relayer:
        assert await post(relayer.url + PATH, stray) == 200
        assert await relayer.submit_rewards(client) == 1
        assert await relayer.submit_rewards(client) == 0
        [line] = relayer.chain_violations()
        assert "unknown data market" in line


@pytest.mark.anyio
async def test_the_chain_answers_eligible_nodes_over_json_rpc_at_a_block() -> None:
    """What the collector's P2 reads: `eth_call` of eligibleNodesForDay(X) at the market
    address, pinned to the block it processes, over the simulation's JSON-RPC server."""
    tester = deterministic_tester(seed=4, genesis_timestamp=1_700_000_000, block_time=2)
    with TesterRpcServer(tester) as server:
        w3 = server.async_web3()
        client = ProtocolStateClient(w3, await deploy_protocol_state(w3))
        market = await client.create_data_market_contract()
        p2 = body(dataMarketAddress=market, slotIDs=[], submissionsList=[], day=2, eligibleNodes=7)
        with Relayer(auth_token=DISPATCHER_TOKEN) as relayer:
            assert await post(relayer.url + PATH, p2) == 200
            before = tester.get_block_by_number("latest")["number"]
            assert await relayer.submit_rewards(client) == 1
        data = (
            "0x" + (keccak(text="eligibleNodesForDay(uint256)")[:4] + (2).to_bytes(32, "big")).hex()
        )

        async def eligible_at(block: int) -> int:
            request = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_call",
                "params": [{"to": market, "data": data}, hex(block)],
            }
            async with (
                aiohttp.ClientSession() as session,
                session.post(server.url, json=request) as response,
            ):
                return int((await response.json())["result"], 16)

        assert await eligible_at(before) == 0
        assert await eligible_at(before + 1) == 7
