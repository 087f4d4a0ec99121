"""`seqcollector diff JOURNAL --against REF`: where two effect streams part.

REF is another journal (a file or a journal directory: two versions' recordings of the same
range, or the same journal replayed by another version), or a configuration file: then
JOURNAL is replayed twice, under its header's core configuration and under the file's
(the core settings the file or the environment set, over the header's configuration:
`BATCH_SIZE: 2` alone replays JOURNAL with batches of 2). Both sides go through the
core alone (`core.step`, no Redis, nothing executed); answers are those the journal holds.
The first effect that differs is shown with the input that produced it on each side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path

import msgspec

from seqcollector.config import Settings
from seqcollector.core import CoreConfig, Input, State, step
from seqcollector.core.effects import Effect
from seqcollector.journal import encode_effect, encode_input
from seqcollector.runtime.pipeline import describe_input
from seqcollector.runtime.replay import open_source


class Produced(msgspec.Struct, frozen=True):
    """An effect and the input that produced it."""

    index: int  # the effect's position in the stream (from 1)
    seq: int
    input: Input
    head: int | None  # the core's head block after the input
    effect: Effect


class DiffResult(msgspec.Struct):
    identical: bool
    effects: int  # effects compared (the common length when identical)
    left: Produced | None = None
    right: Produced | None = None


# The settings the core depends on (`Settings.core_config`): environment name -> field, value.
_CORE_SETTINGS: dict[str, tuple[str, Callable[[Settings], object]]] = {
    "PROTOCOL_STATE_CONTRACT": ("protocol_state", lambda s: s.protocol_state_contract),
    "DATA_MARKET_ADDRESSES": ("markets", lambda s: list(s.data_market_addresses)),
    "BATCH_SIZE": ("batch_size", lambda s: s.batch_size),
    "SEQ_MAX_REORG_DEPTH": ("max_reorg_depth", lambda s: s.max_reorg_depth),
    "ATTESTOR_QUEUE_PUSH_ENABLED": (
        "attestor_queue_push_enabled",
        lambda s: s.attestor_queue_push_enabled,
    ),
    "SEQ_SLOT_SUBMISSIONS_TTL_S": ("slot_submissions_ttl_s", lambda s: s.slot_submissions_ttl_s),
    "SEQ_FEATURE_REWARDS": ("rewards", lambda s: s.features.rewards),
    "REWARDS_UPDATE_BATCH_SIZE": (
        "rewards_update_batch_size",
        lambda s: s.rewards_update_batch_size,
    ),
    "REWARDS_UPDATE_EPOCH_INTERVAL": (
        "rewards_update_epoch_interval",
        lambda s: s.rewards_update_epoch_interval,
    ),
    "PAST_DAYS_BUFFER": ("past_days_buffer", lambda s: s.past_days_buffer),
    "PERIODIC_ELIGIBLE_COUNT_ALERTS": (
        "periodic_eligible_count_alerts",
        lambda s: s.periodic_eligible_count_alerts,
    ),
}


def config_under(base: CoreConfig, settings: Settings) -> tuple[CoreConfig, list[str]]:
    """`base` with the core settings `settings` sets (file or environment) -> the config and
    the names of those settings."""
    changes: dict[str, object] = {}
    named: list[str] = []
    for env_name, (field, value) in _CORE_SETTINGS.items():
        if settings.source(env_name) != "default":
            changes[field] = value(settings)
            named.append(env_name)
    return msgspec.structs.replace(base, **changes), named


def effects_of(path: str | Path, config: CoreConfig | None = None) -> Iterator[Produced]:
    """The effects of a journal through the core (under `config` instead of the header's)."""
    source = open_source(path)
    state: State = source.state
    if config is not None:
        state = msgspec.structs.replace(state, config=config)
    index = 0
    for seq, _, inp in source.inputs:
        _, effects = step(state, inp)
        head = state.head.number if state.head is not None else None
        for effect in effects:
            index += 1
            yield Produced(index, seq, inp, head, effect)


def diff_streams(left: Iterator[Produced], right: Iterator[Produced]) -> DiffResult:
    count = 0
    for a, b in zip_longest(left, right):
        if a is None or b is None or encode_effect(a.effect) != encode_effect(b.effect):
            return DiffResult(False, count, a, b)
        count += 1
    return DiffResult(True, count)


def describe(side: str, p: Produced | None, total: int) -> list[str]:
    """Lines showing one side of a difference."""
    if p is None:
        return [f"{side}: ends after {total} effects"]
    market, epoch, block = describe_input(p.input)
    where = [f"input seq {p.seq} ({type(p.input).__name__}"]
    where += [f"block {block if block is not None else p.head}"]
    if market is not None:
        where += [f"market {market}"]
    if epoch is not None:
        where += [f"epoch {epoch}"]
    return [
        f"{side}: effect #{p.index} from {', '.join(where)})",
        f"  effect: {encode_effect(p.effect).decode()}",
        f"  input:  {encode_input(p.input).decode()[:400]}",
    ]
