"""Start-up against Redis and the chain: each dependency reachable, the contract there, the
markets known to it; market parameters read from its views as of the block where
processing starts.

The parameters become `MarketParams` inputs (journaled like any input), so the core writes
the start-up tables (`SubmissionLimitTable`, `DaySizeTableKey`, `DailySnapshotQuotaTableKey`).
Their `dayCounter` is the day of every epoch until the next `DayStartedEvent`, so it is read
with an `eth_call` pinned to the block before the first one processed (`params_block`), not
at the head: started from a past block, the collector counts each epoch into the day the
chain had then.

Unreachable dependencies are retried with backoff for `SEQ_STARTUP_TIMEOUT_S`, each attempt
logged (`startup_retry`), then one line naming the component and what to do
(`DependencyError`, exit 1). A setting the dependency refuses (a Redis DB index it does not
have, a market the contract does not know) is a `SettingsError` (exit 2), not retried.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seqcollector.core import MarketParams
from seqcollector.core.addresses import checksum
from seqcollector.errors import DependencyError, SettingsError
from seqcollector.runtime.executor import redis_client
from seqcollector.sources.errors import RpcError, TransportError, quantity
from seqcollector.sources.rpc import RpcPool

if TYPE_CHECKING:
    from web3.providers.async_base import AsyncBaseProvider

    from seqcollector.config import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")
Request = Callable[[str, list[Any]], Awaitable[Any]]
Block = int | str  # a block number, or "latest"

# ProtocolState views, each taking the market address (the reference's names).
VIEWS = ("snapshotSubmissionWindow", "DAY_SIZE", "dailySnapshotQuota", "epochsInADay", "dayCounter")


class StartupError(DependencyError):
    """The collector cannot start: the chain or the contract is not what it needs (exit 1)."""


class UnknownMarket(SettingsError):
    """A configured data market the contract does not know (exit 2)."""


# -- bounded retries -------------------------------------------------------------------------

RETRYABLE: tuple[type[BaseException], ...] = (
    TransportError,
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class StartupRetry:
    """Attempts with exponential backoff for `timeout_s` in all (0: one attempt). Each
    attempt gets the time left, at least `min_attempt_s` (a silent peer ends an attempt)."""

    timeout_s: float = 60.0
    first_delay_s: float = 0.25
    max_delay_s: float = 5.0
    min_attempt_s: float = 1.0


async def with_retries(
    component: str,
    what_to_do: str,
    fn: Callable[[], Awaitable[T]],
    retry: StartupRetry,
    fatal: tuple[type[BaseException], ...] = (),
) -> T:
    """`fn()`, retried on `RETRYABLE` failures (other than `fatal` ones) until
    `retry.timeout_s` has passed; then a DependencyError:
    `<component>: <last failure> (...attempts...); <what_to_do>`."""
    started = anyio.current_time()
    deadline = started + retry.timeout_s
    delay = retry.first_delay_s
    attempt = 0
    while True:
        attempt += 1
        budget = max(deadline - anyio.current_time(), retry.min_attempt_s)
        try:
            with anyio.fail_after(budget):
                return await fn()
        except fatal:
            raise
        except RETRYABLE as exc:
            error = describe_failure(exc, budget)
        left = deadline - anyio.current_time()
        if left <= 0:
            elapsed = anyio.current_time() - started
            raise DependencyError(
                f"{component}: {error} (gave up after {attempt} attempt"
                f"{'s' if attempt != 1 else ''} over {elapsed:.1f} s, SEQ_STARTUP_TIMEOUT_S="
                f"{retry.timeout_s:g}); {what_to_do}"
            )
        delay = min(delay, left)
        log.warning(
            "startup_retry",
            component=component,
            error=error,
            attempt=attempt,
            next_delay_s=round(delay, 3),
            gives_up_in_s=round(left, 1),
        )
        await anyio.sleep(delay)
        delay = min(delay * 2, retry.max_delay_s)


def describe_failure(exc: BaseException, budget_s: float | None = None) -> str:
    """One line for a start-up failure (a bare TimeoutError says what timed out)."""
    if isinstance(exc, TimeoutError | RedisTimeoutError) and not str(exc):
        return "no answer" + (f" within {budget_s:.1f} s" if budget_s is not None else "")
    if isinstance(exc, RpcError):
        return exc.message if exc.message else str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


# -- Redis -----------------------------------------------------------------------------------


async def check_redis(
    url: str, shown: str, db_setting: str, retry: StartupRetry, *, connect_timeout_s: float = 5.0
) -> str:
    """Connect, PING and select the database of `url` (retried while unreachable) -> the
    server's version. `shown` is the URL with secrets masked; `db_setting` names the setting
    that chose the database (REDIS_DB, SEQ_REDIS_URL, --redis)."""

    async def probe() -> str:
        client = redis_client(url, connect_timeout_s)
        try:
            await client.ping()  # the connection SELECTs the URL's database first
            info = await client.info("server")
            return str(info.get("redis_version", "?"))
        finally:
            with anyio.move_on_after(2, shield=True):
                await client.aclose()

    what = f"Redis at {shown}"
    try:
        return await with_retries(
            what,
            "start Redis or fix REDIS_HOST/REDIS_PORT/SEQ_REDIS_URL",
            probe,
            retry,
            fatal=(AuthenticationError,),
        )
    except AuthenticationError as exc:
        raise SettingsError(
            f"{what}: {describe_failure(exc)}; give the password in SEQ_REDIS_URL "
            "(redis://:PASSWORD@host:port/db)"
        ) from None
    except ResponseError as exc:
        if "DB index" in str(exc):
            raise SettingsError(
                f"{db_setting}: {what} refuses the database: {exc}; use a database below the "
                "server's `databases` setting (16 by default)"
            ) from None
        raise DependencyError(f"{what}: {describe_failure(exc)}") from None
    except RedisError as exc:
        raise DependencyError(f"{what}: {describe_failure(exc)}") from None


# -- the chain -------------------------------------------------------------------------------


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def _tag(block: Block) -> str:
    return block if isinstance(block, str) else hex(block)


async def _call(
    request: Request,
    method: str,
    params: list[Any],
    block: Block,
    what: str,
    timeout_s: float | None = None,
) -> str:
    """One call as of `block` -> its 0x-hex result. A node's error answer for a past block
    means it has not kept that block's state: StartupError saying to set ARCHIVE_RPC_NODES.
    `timeout_s` bounds the call (ContractQueryTimeout)."""
    try:
        with anyio.fail_after(math.inf if timeout_s is None else timeout_s):
            return _hex(await request(method, [*params, _tag(block)]))
    except TransportError:
        raise  # no answer: retried by the caller
    except TimeoutError:
        raise ContractQueryTimeout(what, block, timeout_s or 0.0) from None
    except RpcError as exc:
        if block == "latest" or "revert" in exc.message.lower():
            raise StartupError(
                f"{what} failed: {exc}; is PROTOCOL_STATE_CONTRACT a ProtocolState?"
            ) from None
        raise StartupError(
            f"RPC node {exc.endpoint} cannot read {what} as of block {block}, where processing "
            f"starts ({exc.message}): it does not keep the state of past blocks; set "
            "ARCHIVE_RPC_NODES to an archive node"
        ) from None


class ContractQueryTimeout(TimeoutError):
    """A contract view did not answer within CONTRACT_QUERY_TIMEOUT (retryable)."""

    def __init__(self, what: str, block: Block, timeout_s: float) -> None:
        super().__init__(
            f"{what} as of block {block}: no answer within CONTRACT_QUERY_TIMEOUT "
            f"({timeout_s:g} s); check the RPC node, or raise CONTRACT_QUERY_TIMEOUT"
        )


async def contract_view(
    request: Request,
    contract: str,
    signature: str,
    args: Sequence[tuple[str, Any]],
    block: Block,
    *,
    timeout_s: float | None,
    contract_name: str = "",
) -> bytes:
    """`eth_call` of the view `signature` (e.g. ``"eligibleNodesForDay(uint256)"``) of
    `contract` with `args` as (ABI type, value) pairs, as of `block` -> the raw return data.
    `contract_name` names it in errors (``ProtocolState``; default: its address).

    Bounded by `timeout_s` (CONTRACT_QUERY_TIMEOUT; None: no bound of its own): raises
    ContractQueryTimeout (a TimeoutError) naming the view and block. A node that has not
    kept the block's state raises StartupError saying to set ARCHIVE_RPC_NODES; no answer at
    all raises TransportError (RPC_MAX_RETRIES rounds already tried by the pool)."""
    data = _selector(signature) + encode([t for t, _ in args], [v for _, v in args]).hex()
    what = (
        f"{signature.split('(')[0]}({', '.join(str(v) for _, v in args)}) of {checksum(contract)}"
    )
    call = {"to": checksum(contract), "data": data}
    raw = await _call(request, "eth_call", [call], block, what, timeout_s)
    return bytes.fromhex(raw[2:])


async def check_contract(request: Request, protocol_state: str, block: Block = "latest") -> None:
    """Raise StartupError when there is no code at PROTOCOL_STATE_CONTRACT at `block`
    (a SettingsError naming SEQ_START_BLOCK when there is code at the head: deployed later)."""
    address = checksum(protocol_state)
    what = f"the code of PROTOCOL_STATE_CONTRACT {address}"
    code = await _call(request, "eth_getCode", [address], block, what)
    empty = ("0x", "0x0")
    if code not in empty:
        return
    if (
        block != "latest"
        and await _call(request, "eth_getCode", [address], "latest", what) not in empty
    ):
        raise SettingsError(
            f"SEQ_START_BLOCK: PROTOCOL_STATE_CONTRACT {address} has no code yet as of block "
            f"{block}, where processing starts (it was deployed later); start after the block "
            "that deployed it and created the markets"
        )
    raise StartupError(
        f"PROTOCOL_STATE_CONTRACT {address}: no contract code on this chain;"
        " check the address and that RPC_NODES point at the chain it lives on"
    )


async def read_market_params(
    request: Request,
    protocol_state: str,
    markets: Sequence[str],
    block: Block = "latest",
    *,
    timeout_s: float | None = None,
) -> list[MarketParams]:
    """One `MarketParams` per market, read from the views as of `block` (its state: after
    the block's transactions), each view call bounded by `timeout_s` (CONTRACT_QUERY_TIMEOUT).
    A node that cannot answer for a past block raises a StartupError saying to set
    ARCHIVE_RPC_NODES."""
    out = []
    for market in markets:
        values = []
        for view in VIEWS:
            args = [("address", checksum(market))]
            raw = await contract_view(
                request,
                protocol_state,
                f"{view}(address)",
                args,
                block,
                timeout_s=timeout_s,
                contract_name="ProtocolState",
            )
            if len(raw) < 32:
                raise StartupError(
                    f"market {checksum(market)}: ProtocolState.{view}(address) returned "
                    f"{'0x' + raw.hex()!r} at block {block}; is PROTOCOL_STATE_CONTRACT a "
                    "ProtocolState?"
                )
            values.append(int.from_bytes(raw[:32], "big"))
        out.append(MarketParams(market, *values))
    return out


async def check_markets(
    request: Request,
    protocol_state: str,
    params: Sequence[MarketParams],
    block: Block,
    *,
    timeout_s: float | None = None,
) -> None:
    """Raise UnknownMarket for the first market the contract does not know at `block`: its
    views return 0 (no `dayCounter`, no `epochsInADay`). Such a market would never open a
    window with the right day; waiting on it in silence would hide a typo."""
    for p in params:
        if p.day_counter > 0 and p.epochs_in_a_day > 0:
            continue
        hint = "remove it from DATA_MARKET_ADDRESSES or fix the address"
        if block != "latest":
            (now,) = await read_market_params(
                request, protocol_state, [p.market], timeout_s=timeout_s
            )
            if now.day_counter > 0 and now.epochs_in_a_day > 0:
                hint = (
                    "it is one at the head, so it was created later: set SEQ_START_BLOCK "
                    "after the block that created it"
                )
        raise UnknownMarket(
            f"DATA_MARKET_ADDRESSES: market {checksum(p.market)} is not a data market of "
            f"ProtocolState {checksum(protocol_state)} as of block {block} (dayCounter "
            f"{p.day_counter}, epochsInADay {p.epochs_in_a_day}); {hint}"
        )


async def chain_id(request: Request) -> int:
    return quantity(await request("eth_chainId", []))


def _hex(raw: object) -> str:
    """Providers answer with 0x-strings (HTTP/WS) or bytes (some in-process ones)."""
    if isinstance(raw, bytes | bytearray):
        return "0x" + bytes(raw).hex()
    return raw if isinstance(raw, str) else "0x"


async def open_pool(
    stack: AsyncExitStack,
    setting: str,
    urls: Sequence[str],
    settings: Settings,
    retry: StartupRetry,
    providers: Sequence[AsyncBaseProvider] = (),
) -> RpcPool:
    """An RpcPool entered on `stack`, with the RPC_* request settings (`RpcPool.from_settings`);
    opening its WebSockets is bounded by the start-up timeout (a node that accepts and never
    answers)."""
    pool = RpcPool.from_settings(urls, settings, providers=providers)
    stack.push_async_callback(pool.aclose)
    budget = max(retry.timeout_s, retry.min_attempt_s)
    try:
        with anyio.fail_after(budget):
            await pool.__aenter__()
    except TimeoutError:
        raise DependencyError(
            f"{setting} ({', '.join(pool.endpoints)}): no answer within {budget:g} s while "
            f"connecting; check that {setting} point at running nodes"
        ) from None
    return pool


# -- check-config --connect ------------------------------------------------------------------


async def check_connections(settings: Settings, say: Callable[[str], None]) -> None:
    """Check every dependency of `run` as `run` would, one `say(line)` per check passed:
    Redis (PING, its database), each RPC node (and archive node) by eth_chainId and
    eth_blockNumber, the contract's code, and each market known to it as of the block
    where a first start would read its parameters. Raises the first failure."""
    from seqcollector.config import mask_url

    retry = StartupRetry(settings.startup_timeout_s)
    url = settings.redis_url()
    db_setting = "SEQ_REDIS_URL" if settings.redis_url_override else "REDIS_DB"
    version = await check_redis(url, mask_url(url), db_setting, retry)
    say(f"Redis at {mask_url(url)}: PING answered, database selected (redis {version})")
    chains: dict[str, int] = {}
    heads: dict[str, int] = {}
    views_s = settings.contract_query_timeout
    for setting, urls in (
        ("RPC_NODES", settings.rpc_nodes),
        ("ARCHIVE_RPC_NODES", settings.archive_rpc_nodes),
    ):
        for node in urls:
            shown = mask_url(node)
            async with AsyncExitStack() as stack:
                pool = await open_pool(stack, setting, [node], settings, retry)
                what = f"{setting} node {shown}"
                fix = f"check that {setting} point at a running node"
                chain = await with_retries(what, fix, partial(chain_id, pool.request), retry)
                head = await with_retries(what, fix, pool.head, retry)
            chains[f"{setting} {shown}"], heads[node] = chain, head
            say(f"{setting} node {shown}: chain id {chain}, head block {head}")
    if len(set(chains.values())) > 1:
        listed = ", ".join(f"{name} is on chain {cid}" for name, cid in chains.items())
        raise SettingsError(f"RPC_NODES: the nodes are not on one chain: {listed}")
    ps = settings.protocol_state_contract
    async with AsyncExitStack() as stack:
        pool = await open_pool(stack, "RPC_NODES", settings.rpc_nodes, settings, retry)
        fix = "check that RPC_NODES point at a running node of the chain"
        nodes = f"RPC_NODES ({', '.join(pool.endpoints)})"
        await with_retries(nodes, fix, partial(check_contract, pool.request, ps), retry)
        say(f"PROTOCOL_STATE_CONTRACT {checksum(ps)}: contract code found")
        if settings.archive_rpc_nodes:
            setting, urls = "ARCHIVE_RPC_NODES", settings.archive_rpc_nodes
            reader = await open_pool(stack, setting, urls, settings, retry)
        else:
            reader = pool
        start = settings.start_block
        at: Block = "latest" if start is None else max(start - 1, 0)
        if isinstance(at, int) and at > max(heads.values()):
            say(
                f"SEQ_START_BLOCK {start} is beyond the head: `run` will wait for block {at}"
                " before reading the market parameters"
            )
            return
        await with_retries(nodes, fix, partial(check_contract, reader.request, ps, at), retry)
        read = partial(
            read_market_params,
            reader.request,
            ps,
            settings.data_market_addresses,
            at,
            timeout_s=views_s,
        )
        params = await with_retries(nodes, fix, read, retry)
        await check_markets(reader.request, ps, params, at, timeout_s=views_s)
    for p in params:
        say(
            f"market {checksum(p.market)}: known to the contract as of block {at} (dayCounter "
            f"{p.day_counter}, epochsInADay {p.epochs_in_a_day}, snapshotSubmissionWindow "
            f"{p.submission_window} s)"
        )
