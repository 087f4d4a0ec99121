"""`make bench`: every benchmark, printed as one table with its goal (figures, not tests)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from bench import (
    api_load,
    batch_prep,
    core_replay,
    journal_cost,
    live_chain,
    rewards_p1,
    sim_load,
    takeover,
)
from sim.redis_server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=200_000, help="(a) journal length")
    parser.add_argument("--repeats", type=int, default=5, help="(b) epochs timed, median")
    args = parser.parse_args()
    console = Console(width=110)
    table = Table(title="seqcollector benchmarks")
    for col in ("bench", "figure", "value", "goal"):
        table.add_column(col, justify="right" if col == "value" else "left")

    console.print(f"(a) core replay: generating a {args.blocks:,}-block journal, 3 markets...")
    a = core_replay.run(args.blocks)
    table.add_row(
        "(a) core replay",
        "blocks / inputs / effects",
        f"{a['blocks']:,} / {a['inputs']:,} / {a['effects']:,}",
        "",
    )
    table.add_row(
        "",
        "core blocks/s (decoded inputs)",
        f"{a['core blocks/s']:,.0f}",
        _goal(a["core blocks/s"] >= 50_000, ">= 50,000"),
    )
    table.add_row("", "core inputs/s", f"{a['core inputs/s']:,.0f}", "")
    table.add_row("", "JSON decode + core blocks/s", f"{a['decode+core blocks/s']:,.0f}", "")
    table.add_row("", "JSON decode + core inputs/s", f"{a['decode+core inputs/s']:,.0f}", "")

    console.print("(b) batch preparation: 10,000 keys, 1,000 projects, 500 slots, real Redis...")
    with RedisServer() as server:
        b = batch_prep.run(server.url, args.repeats)
    table.add_row(
        "(b) batch prep", "seqcollector wall ms (median)", f"{b['seqcollector ms']:,.1f}", ""
    )
    table.add_row(
        "", "seqcollector Redis round trips", f"{b['seqcollector round trips']:,.0f}", "O(1)"
    )
    table.add_row("", "Go-style baseline wall ms", f"{b['go-style baseline ms']:,.1f}", "")
    table.add_row("", "Go-style round trips", f"{b['go-style round trips']:,.0f}", "")
    table.add_row(
        "",
        "speed-up vs baseline",
        f"{b['speed-up x']:,.1f}x",
        _goal(b["speed-up x"] >= 20, ">= 20x"),
    )

    console.print("(f) periodic reward update (P1): 10,000 slots, real Redis, Go pattern beside...")
    with RedisServer() as server:
        f = rewards_p1.run(server.url, 10_000, args.repeats)
    table.add_row(
        "(f) rewards P1", "seqcollector wall ms (median)", f"{f['seqcollector ms']:,.1f}", ""
    )
    table.add_row(
        "", "seqcollector Redis round trips", f"{f['seqcollector round trips']:,.0f}", "O(1)"
    )
    table.add_row("", "Go pattern (GET per slot) wall ms", f"{f['go-pattern ms']:,.1f}", "")
    table.add_row("", "Go pattern round trips", f"{f['go-pattern round trips']:,.0f}", "")
    table.add_row(
        "",
        "speed-up vs Go pattern",
        f"{f['speed-up x']:,.1f}x",
        _goal(f["speed-up x"] >= 10, ">= 10x"),
    )

    console.print("(g) read API: 50 clients on loopback, ours (uvicorn) and an aiohttp baseline...")
    with RedisServer() as server:
        g = api_load.run(server.url)
    for path in api_load.BODIES:
        ours, base, ratio = (
            g[(who, path)] for who in ("seqcollector", "aiohttp baseline", "ratio")
        )
        table.add_row(
            "(g) read API" if path == "/batchCount" else "",
            f"{path} req/s, p50 / p99 ms",
            f"{ours['req/s']:,.0f}, {ours['p50 ms']:.1f} / {ours['p99 ms']:.1f}",
            "",
        )
        table.add_row(
            "",
            f"{path} aiohttp baseline",
            f"{base['req/s']:,.0f}, {base['p50 ms']:.1f} / {base['p99 ms']:.1f}",
            "",
        )
        table.add_row("", f"{path} req/s ours / baseline", f"{ratio['req/s']:.2f}x", "")

    console.print("(c) backfill: 5,000 blocks with 500 epochs from anvil (building the chain)...")
    c = live_chain.backfill()
    table.add_row(
        "(c) backfill",
        "seqcollector HTTP requests / 1k blocks",
        f"{c['ours requests/1k blocks']:,.1f}",
        "",
    )
    table.add_row("", "seqcollector blocks/s", f"{c['ours blocks/s']:,.0f}", "")
    table.add_row(
        "", "Go strategy HTTP requests / 1k blocks", f"{c['go requests/1k blocks']:,.0f}", ""
    )
    table.add_row("", "Go strategy blocks/s", f"{c['go blocks/s']:,.0f}", "")
    table.add_row(
        "",
        "fewer requests than Go",
        f"{c['fewer requests x']:,.0f}x",
        _goal(c["fewer requests x"] >= 50, ">= 50x"),
    )

    console.print("(d) head latency: 200 blocks mined one at a time, WS newHeads...")
    d = live_chain.head_latency()
    table.add_row(
        "(d) head latency",
        "WS newHeads p50 ms (mined -> committed)",
        f"{d['ws p50 ms']:,.1f}",
        _goal(d["ws p50 ms"] <= 50, "<= 50 ms"),
    )
    table.add_row("", "WS newHeads p99 ms", f"{d['ws p99 ms']:,.1f}", "")
    table.add_row(
        "",
        "HTTP polling (50 ms) p50 / p99 ms",
        f"{d['poll(50ms) p50 ms']:,.1f} / {d['poll(50ms) p99 ms']:,.1f}",
        "",
    )

    console.print("(h) takeover: 20 drills, two `run` processes, SIGSTOP the active (lease 1 s)...")
    h = takeover.run(drills=20, lease_s=1.0)
    table.add_row(
        "(h) takeover",
        "pause -> standby's first commit p50 / max s",
        f"{h['takeover p50 s']:.2f} / {h['takeover max s']:.2f}",
        "",
    )
    table.add_row(
        "",
        f"commits lost to failover ({h['epochs']} epochs)",
        f"{h['commits lost to failover']}",
        _goal(h["commits lost to failover"] == 0, "0"),
    )
    console.print("(i) journal cost at the head: 2,000 blocks one per commit, real Redis, x3...")
    with RedisServer() as server:
        jc = journal_cost.run(server.url)
    for i, mode in enumerate(journal_cost.MODES):
        table.add_row(
            "(i) journal cost" if i == 0 else "",
            f"step p50 / p99 ms, journal {mode}",
            f"{jc[f'{mode} p50 ms']:.2f} / {jc[f'{mode} p99 ms']:.2f}",
            "",
        )
    table.add_row(
        "",
        "SEQ_JOURNAL_DIR p99 overhead ms (rotating)",
        f"{jc['dir p99 overhead ms']:.2f} ({jc['dir+rotate p99 overhead ms']:.2f})",
        _goal(jc["dir p99 overhead ms"] <= 1.0, "<= 1 ms"),
    )

    console.print(
        "(e) load: fast simulation, 10 markets x 200 projects x 100 slots x 500 epochs..."
    )
    e = sim_load.sim_load()
    table.add_row("(e) load", "epochs (fast mode, real Redis)", f"{e['epochs']:,.0f}", "")
    table.add_row(
        "",
        "epochs/s (world and finalizer in processes of their own)",
        f"{e['epochs/s']:,.1f}",
        _goal(e["epochs/s"] >= 200, ">= 200"),
    )
    table.add_row(
        "", "epochs/s of the collector's busy time", f"{e['collector epochs/s']:,.1f}", ""
    )
    table.add_row(
        "",
        "peak RSS MB (the collector's process)",
        f"{e['peak RSS MB']:,.0f}",
        _goal(e["peak RSS MB"] <= 150, "<= 150"),
    )
    table.add_row("", "invariants", "ok" if e["invariants ok"] else "FAILED", "")
    console.print("(e) replay of 1,000,000 blocks into a real Redis, RSS every 10%...")
    r = sim_load.replay_memory()
    table.add_row("", "1M-block replay blocks/s", f"{r['blocks/s']:,}", "")
    samples = " ".join(f"{x:.0f}" for x in r["RSS MB at each 10%"])  # type: ignore[attr-defined]
    table.add_row("", "RSS MB at each 10% of the replay", samples, "flat")
    console.print(table)


def _goal(met: bool, text: str) -> str:
    return f"{text} {'met' if met else 'NOT met'}"


if __name__ == "__main__":
    main()
