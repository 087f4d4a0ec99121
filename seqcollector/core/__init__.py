"""The deterministic core: `step(state, input) -> (state, effects)`, nothing else does I/O."""

from seqcollector.core.config import CoreConfig
from seqcollector.core.effects import Effect
from seqcollector.core.inputs import Block, Input, Log, MarketParams, Rewind, SubmissionSets, Tick
from seqcollector.core.machine import pending_queries, step
from seqcollector.core.state import State, dump_state, load_state, new_state

__all__ = [
    "Block",
    "CoreConfig",
    "Effect",
    "Input",
    "Log",
    "MarketParams",
    "Rewind",
    "State",
    "SubmissionSets",
    "Tick",
    "dump_state",
    "load_state",
    "new_state",
    "pending_queries",
    "step",
]
