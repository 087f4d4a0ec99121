"""Benchmark (a): core replay throughput on a generated journal (figures, not a test).

Generates a journal of BLOCKS blocks, 3 markets, an epoch every 10 blocks per market
(submission query results included), then times the core alone over it: once including
JSON decoding of each line, once over already-decoded inputs. Single process, one core.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from seqcollector.core import Block, new_state, step
from seqcollector.journal import JournalHeader, JournalWriter, read_header, read_inputs
from sim.synthetic import SyntheticWorld, WorldSpec, drive


def generate(path: Path, blocks: int) -> None:
    spec = WorldSpec(
        seed=11,
        markets=3,
        blocks=blocks,
        epoch_every=10,
        window_s=30,
        projects=3,
        slots=3,
        noise_logs=False,
    )
    world = SyntheticWorld(spec)
    config = world.core_config(batch_size=50)
    with JournalWriter(path, JournalHeader(config=config, meta={"spec": repr(spec)})) as w:
        w.write_many(drive(world, config))


def run(blocks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        t0 = time.perf_counter()
        generate(path, blocks)
        gen_s = time.perf_counter() - t0
        config = read_header(path).config
        gc.collect()
        t0 = time.perf_counter()
        state = new_state(config)
        n_inputs = n_blocks = n_effects = 0
        for _, _, inp in read_inputs(path):
            n_effects += len(step(state, inp)[1])
            n_inputs += 1
            n_blocks += isinstance(inp, Block)
        with_decode = time.perf_counter() - t0
        inputs = [inp for _, _, inp in read_inputs(path)]
        gc.collect()
        gc.freeze()  # the benchmark's own 450k-input list is not the core's garbage to scan
        t0 = time.perf_counter()
        state = new_state(config)
        for inp in inputs:
            step(state, inp)
        core_only = time.perf_counter() - t0
        gc.unfreeze()
        size_mb = path.stat().st_size / 1e6
    return {
        "blocks": n_blocks,
        "inputs": n_inputs,
        "effects": n_effects,
        "journal_mb": size_mb,
        "generate_s": gen_s,
        "decode+core blocks/s": n_blocks / with_decode,
        "decode+core inputs/s": n_inputs / with_decode,
        "core blocks/s": n_blocks / core_only,
        "core inputs/s": n_inputs / core_only,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=200_000)
    args = parser.parse_args()
    for k, v in run(args.blocks).items():
        print(f"{k:24} {v:,.1f}" if isinstance(v, float) else f"{k:24} {v:,}")
