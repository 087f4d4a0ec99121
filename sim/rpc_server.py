"""An in-process eth-tester chain served over HTTP JSON-RPC on loopback, like a live node.

`with TesterRpcServer(tester) as server: server.url` serves `tester` (an `EthereumTester`,
e.g. `sim.ethtester.deterministic_tester(...)`) on `http://127.0.0.1:<free port>`, so that
the collector reaches it exactly as it reaches a node (`RpcPool([server.url])`, JSON-RPC
batches, aiohttp keep-alive), and `sim.rpc_proxy.RpcProxy(server.url)` can sit in front.

Requests (one call or a batch array) go through web3's synchronous `EthereumTesterProvider`
request path, `provider.request_func(w3, ...)`, which runs eth-tester's own translation
(hex block numbers and `fromBlock`/`toBlock` to ints, snake_case results to camelCase); its
results are then serialized as a node does (see `node_json`):

- every integer is a 0x-hex quantity (number, timestamp, logIndex, chainId, ...), booleans
  stay booleans; `logsBloom` (an int in eth-tester) is 256 bytes of 0x-hex data;
- bytes and 0x-strings (hashes, data, addresses) are 0x lowercase hex;
- log entries carry `"removed": false` instead of eth-tester's `"type": "mined"`; full
  transactions in blocks get node keys (`blockHash`, `input`, ...) instead of snake_case;
- an unknown block or transaction is `null`;
- `eth_getLogs` with `toBlock` beyond the head stops at the head (eth-tester would fail on
  the missing block), and with `fromBlock` beyond the head is `[]`;
- call objects with `input` instead of `data` are accepted;
- errors are `{"jsonrpc": "2.0", "id": ..., "error": {"code": ..., "message": ...}}`:
  -32700 unparsable body, -32600 not a request (or an empty batch), -32601 unknown or
  unsupported method, -32602 invalid params, 3 `execution reverted` (with the revert data as
  `data`, as geth does), -32000 a missing block, -32603 anything else. The reply's `id` is
  the request's (null when it had none).

Every method eth-tester implements is served (`methods` restricts them), e.g. eth_chainId,
net_version, eth_blockNumber, eth_getBlockByNumber/ByHash, eth_getLogs, eth_getCode,
eth_call, eth_getTransactionReceipt, eth_sendTransaction, evm_mine.

Threads: eth-tester and py-evm are not thread-safe. Every call the server makes holds
`server.lock` (a `threading.RLock`, given or created), one JSON-RPC call at a time (a batch
releases it between calls, so the chain may move inside a batch, as on a node). Whatever
else touches the tester must hold it too:

- synchronous code: `with server.lock: mine(tester, 3)`;
- the simulation's actors on the event loop using `sim.ethtester.async_web3(tester)`: hold
  the lock around each awaited call (`with server.lock: await client.release_epoch(...)`).
  eth-tester answers without yielding to the loop, so the lock is held briefly (at most the
  time the server needs to finish its current call). Never hold it across an await on the
  server itself (an `RpcPool` request to `server.url`): the server would wait for the lock
  and the loop for the server. `server.async_web3()` is an AsyncWeb3 on the same tester
  that takes the lock around each provider call by itself.
"""

from __future__ import annotations

import ast
import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler
from typing import Any

from eth_abi.abi import encode
from eth_tester import EthereumTester  # type: ignore[import-untyped]
from eth_tester.exceptions import (  # type: ignore[import-untyped]
    BlockNotFound,
    TransactionFailed,
    ValidationError,
)
from web3 import AsyncWeb3, Web3
from web3.providers.eth_tester import AsyncEthereumTesterProvider, EthereumTesterProvider
from web3.providers.eth_tester.middleware import (
    transaction_result_formatter,
    transaction_result_remapper,
)
from web3.types import RPCEndpoint, RPCResponse

from sim.loopback import LoopbackHTTPServer, ServesOnLoopback

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
EXECUTION_REVERTED = 3
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
BLOOM_BYTES = 256
LOG_TYPES = ("mined", "pending")
SHUTDOWN_POLL_S = 0.05  # how often serve_forever checks for close()
CALL_OBJECT_METHODS = ("eth_call", "eth_estimateGas", "eth_createAccessList", "eth_sendTransaction")

RequestFn = Callable[[RPCEndpoint, Any], RPCResponse]


class LockedAsyncEthereumTesterProvider(AsyncEthereumTesterProvider):
    """An `AsyncEthereumTesterProvider` on `tester` that holds `lock` around each request."""

    def __init__(self, tester: EthereumTester, lock: threading.RLock) -> None:
        super().__init__()
        self.ethereum_tester = tester  # the constructor builds its own, unseeded tester
        self.lock = lock

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self.lock:  # eth-tester does not yield to the loop: held only for this call
            return await super().make_request(method, params)


class TesterRpcServer(ServesOnLoopback):
    """`with TesterRpcServer(tester) as server: server.url` (see the module docstring).

    `lock`: the lock guarding `tester` (a new RLock if None), exposed as `server.lock`.
    `methods`: the JSON-RPC methods served (None: all eth-tester implements); others are
    answered with -32601. Counts: `http_requests` (a batch is one) and `calls` by method.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        tester: EthereumTester,
        lock: threading.RLock | None = None,
        *,
        methods: Collection[str] | None = None,
    ) -> None:
        self.tester = tester
        self.lock = lock if lock is not None else threading.RLock()
        self.methods = frozenset(methods) if methods is not None else None
        self.http_requests = 0
        self.calls: Counter[str] = Counter()
        self._provider = EthereumTesterProvider(ethereum_tester=tester)
        w3 = Web3(self._provider, middleware=[])
        self._request: RequestFn = self._provider.request_func(w3, w3.middleware_onion)
        self._stats_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._http = LoopbackHTTPServer(self._handler(), "tester-rpc", SHUTDOWN_POLL_S)
        self.port, self.url = self._http.port, self._http.url
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving and drop open (keep-alive) connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._http.shutdown()
        with self._stats_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        self._http.close()

    def async_web3(self) -> AsyncWeb3[LockedAsyncEthereumTesterProvider]:
        """An AsyncWeb3 on the served tester, each provider call under `self.lock`."""
        return AsyncWeb3(LockedAsyncEthereumTesterProvider(self.tester, self.lock))

    # -- JSON-RPC --------------------------------------------------------------------------

    def handle(self, body: bytes) -> Any:
        """The JSON reply (an object or an array) to one HTTP request body."""
        with self._stats_lock:
            self.http_requests += 1
        try:
            request = json.loads(body)
        except ValueError as exc:
            return error_reply(None, PARSE_ERROR, f"parse error: {exc}")
        if isinstance(request, list):
            if not request:
                return error_reply(None, INVALID_REQUEST, "empty batch")
            return [self.call(item) for item in request]
        return self.call(request)

    def call(self, request: Any) -> dict[str, Any]:
        """The reply to one JSON-RPC request object."""
        if not isinstance(request, dict):
            return error_reply(None, INVALID_REQUEST, "invalid request")
        rid = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if not isinstance(method, str):
            return error_reply(rid, INVALID_REQUEST, "invalid request: no method")
        with self._stats_lock:
            self.calls[method] += 1
        if params is None:
            params = []
        if not isinstance(params, list):
            return error_reply(rid, INVALID_PARAMS, "invalid params: not an array")
        if self.methods is not None and method not in self.methods:
            return error_reply(
                rid, METHOD_NOT_FOUND, f"the method {method} does not exist/is not available"
            )
        try:
            with self.lock:
                response = self._dispatch(method, params)
        except TransactionFailed as exc:
            return reverted_reply(rid, exc)
        except BlockNotFound as exc:
            return error_reply(rid, SERVER_ERROR, str(exc) or "header not found")
        except (ValidationError, ValueError, TypeError, KeyError, IndexError) as exc:
            return error_reply(rid, INVALID_PARAMS, f"invalid params: {_describe(exc)}")
        except Exception as exc:  # a bug here or in eth-tester: tell the client
            return error_reply(rid, INTERNAL_ERROR, f"internal error: {_describe(exc)}")
        error = response.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            return error_reply(rid, code if isinstance(code, int) else INTERNAL_ERROR, str(message))
        return {"jsonrpc": "2.0", "id": rid, "result": node_json(response.get("result"))}

    def _dispatch(self, method: str, params: list[Any]) -> dict[str, Any]:
        """eth-tester's response (lock held)."""
        if method == "eth_getLogs" and params and isinstance(params[0], dict):
            query = self._clamped_log_query(params[0])
            if query is None:
                return {"result": []}
            params = [query, *params[1:]]
        elif method in CALL_OBJECT_METHODS and params and isinstance(params[0], dict):
            params = [_data_not_input(params[0]), *params[1:]]
        response: dict[str, Any] = dict(self._request(RPCEndpoint(method), params))
        return response

    def _clamped_log_query(self, query: dict[str, Any]) -> dict[str, Any] | None:
        """`query` with a numeric `toBlock` beyond the head set to the head; None when a
        numeric `fromBlock` is beyond the head (no logs)."""
        if "blockHash" in query:
            return query
        head = int(self.tester.get_block_by_number("latest")["number"])
        start, end = _block_number(query.get("fromBlock")), _block_number(query.get("toBlock"))
        if start is not None and start > head:
            return None
        if end is not None and end > head:
            return {**query, "toBlock": hex(head)}
        return query

    # -- HTTP ------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nodes serve it

            def setup(self) -> None:
                super().setup()
                with server._stats_lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._stats_lock:
                    server._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length")
                if length is None:
                    self._send(411, b"")
                    return
                reply = server.handle(self.rfile.read(int(length)))
                self._send(200, json.dumps(reply).encode())

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# -- node-style JSON -------------------------------------------------------------------------


def node_json(value: Any, key: str = "") -> Any:
    """eth-tester's result -> what a node sends: ints as 0x-quantities (bools kept), bytes
    and 0x-strings as lowercase 0x-hex, `logsBloom` as 256 bytes, node keys for logs and
    full transactions."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(BLOOM_BYTES, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return value.lower() if value[:2] in ("0x", "0X") else value
    if isinstance(value, dict):
        if key == "transactions" or _is_transaction(value):
            value = transaction_result_formatter(transaction_result_remapper(value))
        if "logIndex" in value and value.get("type") in LOG_TYPES:
            value = {k: v for k, v in value.items() if k != "type"}
            value.setdefault("removed", False)
        return {k: node_json(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [node_json(item, key) for item in value]
    return str(value)


def _is_transaction(value: dict[str, Any]) -> bool:
    """An eth-tester transaction (snake_case keys, `data` for `input`)."""
    return "transaction_index" in value or ("nonce" in value and "block_hash" in value)


def error_reply(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def reverted_reply(rid: Any, exc: BaseException) -> dict[str, Any]:
    """geth's answer to a reverted call: code 3, `execution reverted[: reason]`, the revert
    data. web3 re-raises eth-tester's TransactionFailed(reason) as TransactionFailed(
    "execution reverted: <reason>"); the reason is the decoded Error(string) message, or the
    raw revert bytes as their repr (b'' for a bare revert)."""
    inner = exc.__context__ if isinstance(exc.__context__, TransactionFailed) else exc
    reason: Any = inner.args[0] if inner.args else ""
    if isinstance(reason, str) and reason[:2] in ("b'", 'b"'):
        with contextlib.suppress(ValueError, SyntaxError):
            reason = ast.literal_eval(reason)
    if isinstance(reason, bytes | bytearray):  # a bare revert or a custom error
        return error_reply(rid, EXECUTION_REVERTED, "execution reverted", "0x" + reason.hex())
    text = str(reason)
    if text.startswith("execution reverted"):
        return error_reply(rid, EXECUTION_REVERTED, text)
    data = ERROR_STRING_SELECTOR + encode(["string"], [text])
    return error_reply(rid, EXECUTION_REVERTED, f"execution reverted: {text}", "0x" + data.hex())


def _block_number(value: Any) -> int | None:
    """A numeric block (0x-hex string or int) -> int; tags and None -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        return int(value, 16)
    return None


def _data_not_input(call: dict[str, Any]) -> dict[str, Any]:
    """Call objects may carry the calldata as `input` (newer clients): eth-tester wants `data`."""
    if "input" in call and "data" not in call:
        return {("data" if k == "input" else k): v for k, v in call.items()}
    return call


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
