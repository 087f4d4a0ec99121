"""Run a few awaitables concurrently and get their results in order, or the first failure.

anyio task groups report failures as an `ExceptionGroup`; the sources want the plain
exception of the first call that failed (by position), so that callers can catch `RpcError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

import anyio

T = TypeVar("T")


async def gather(calls: Sequence[Callable[[], Awaitable[T]]], limit: int = 4) -> list[T]:
    """Await every call (at most `limit` at once) -> their results, in the order given.

    If any call raises an `Exception`, the others are cancelled and the exception of the
    lowest-positioned failed call is re-raised as is (not wrapped in a group).
    """
    if len(calls) == 1:
        return [await calls[0]()]
    results: list[T | None] = [None] * len(calls)
    errors: dict[int, Exception] = {}
    limiter = anyio.CapacityLimiter(max(1, limit))

    async def run(index: int, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                results[index] = await calls[index]()
            except Exception as exc:
                errors[index] = exc
                scope.cancel()

    async with anyio.create_task_group() as tg:
        for index in range(len(calls)):
            tg.start_soon(run, index, tg.cancel_scope)
    if errors:
        raise errors[min(errors)]
    return cast(list[T], results)
