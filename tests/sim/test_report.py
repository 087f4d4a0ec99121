"""The simulation report: a self-contained HTML page with an inline SVG timeline, and a rich
table of the summary and the invariants."""

from __future__ import annotations

import io
import random
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console

from sim.record import BatchMark, FaultMark, InvariantResult, SimRecord, WindowSpan
from sim.report import render_html, summary_table, write_report

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"
MARKET_A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
MARKET_B = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def small_record() -> SimRecord:
    return SimRecord(
        seed=42,
        mode="fast",
        markets=[MARKET_A, MARKET_B],
        faults_enabled=["reorg", "crash"],
        first_block=100,
        last_block=400,
        windows=[
            # A: 1 and 2 overlap, 3 comes after 1 closed; B: 7 and 8 overlap, 9 still open
            WindowSpan(MARKET_A, 1, 100, 160),
            WindowSpan(MARKET_A, 2, 130, 200),
            WindowSpan(MARKET_A, 3, 170, 240),
            WindowSpan(MARKET_B, 7, 110, 250),
            WindowSpan(MARKET_B, 8, 200, 300),
            WindowSpan(MARKET_B, 9, 320, None),
        ],
        batches=[
            BatchMark(MARKET_A, 1, 2, 17, 165),
            BatchMark(MARKET_B, 7, 1, 5, 255),
        ],
        faults=[
            FaultMark("reorg", 210, "depth 3 <rewind to 207> & replay"),
            FaultMark("crash", 280, "collector killed"),
        ],
        invariants=[
            InvariantResult("no_lost_submissions", True, "all 22 counted"),
            InvariantResult("batches<=windows", False, 'epoch 8: "2" batches & 1 window'),
        ],
        summary={"blocks": 301, "windows": 6, "elapsed_s": 1.234567891, "note": "<b>x</b>"},
        digest="ab12cd34ef",
    )


def parse(page: str) -> ET.Element:
    """The page parsed as XML (it is polyglot XHTML): fails on any malformed markup."""
    return ET.fromstring(page.encode("utf-8"))


def svg_of(root: ET.Element) -> ET.Element:
    svgs = list(root.iter(f"{SVG}svg"))
    assert len(svgs) == 1
    return svgs[0]


def classes(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def test_report_is_well_formed_and_self_contained(tmp_path: Path) -> None:
    path = write_report(tmp_path / "out", small_record())
    assert path == tmp_path / "out" / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    root = parse(page)
    assert root.tag == f"{XHTML}html"
    assert "<svg" in page
    # nothing fetched from elsewhere, no scripts
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']""", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/1999/xhtml"', "").replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_title_summary_and_invariants(tmp_path: Path) -> None:
    page = write_report(tmp_path, small_record()).read_text(encoding="utf-8")
    root = parse(page)
    title = "".join(next(root.iter(f"{XHTML}title")).itertext())
    assert "42" in title and "fast" in title and "ab12cd34ef" in title
    h1 = "".join(next(root.iter(f"{XHTML}h1")).itertext())
    assert "42" in h1 and "fast" in h1

    tables = {t.get("class"): t for t in root.iter(f"{XHTML}table")}
    summary = ["|".join(td.text or "" for td in tr) for tr in tables["summary"]]
    assert "blocks|301" in summary
    assert "elapsed_s|1.23457" in summary
    assert "note|<b>x</b>" in summary  # the text came through ...
    assert "&lt;b&gt;x&lt;/b&gt;" in page  # ... escaped
    assert "<b>x</b>" not in page

    rows = list(tables["invariants"])[1:]
    results = {tr[0].text: (tr[1].text, tr[1].get("class"), tr[2].text) for tr in rows}
    assert results["no_lost_submissions"] == ("ok", "ok", "all 22 counted")
    assert results["batches<=windows"] == ("FAILED", "fail", 'epoch 8: "2" batches & 1 window')
    assert "batches&lt;=windows" in page
    assert "1 of 2 invariant(s) FAILED" in page


def test_timeline_bars_rows_batches_faults(tmp_path: Path) -> None:
    record = small_record()
    root = parse(write_report(tmp_path, record).read_text(encoding="utf-8"))
    svg = svg_of(root)
    assert int(float(svg.get("width", "0"))) <= 1200

    bars = [el for el in svg.iter(f"{SVG}rect") if "win" in classes(el)]
    assert len(bars) == len(record.windows)  # one bar per window
    tips = {"".join(b.find(f"{SVG}title").itertext()): b for b in bars}  # type: ignore[union-attr]
    by_epoch = {int(re.search(r"epoch (\d+)", t).group(1)): b for t, b in tips.items()}  # type: ignore[union-attr]

    def span(epoch: int) -> tuple[float, float, float]:
        b = by_epoch[epoch]
        x = float(b.get("x", "nan"))
        return x, x + float(b.get("width", "nan")), float(b.get("y", "nan"))

    # x grows with the block number; overlapping windows sit on different sub-rows
    a1, a2, a3 = span(1), span(2), span(3)
    assert a1[0] < a2[0] < a3[0]
    assert a1[2] != a2[2] and a2[2] != a3[2]
    assert a3[2] == a1[2]  # epoch 3 starts after epoch 1 closed: it reuses the row
    b7, b8 = span(7), span(8)
    assert b7[2] != b8[2]
    # lanes: market B's bars are below market A's
    assert min(span(e)[2] for e in (7, 8, 9)) > max(span(e)[2] for e in (1, 2, 3))
    # the still-open window runs to the last block, dashed
    open_bar = by_epoch[9]
    assert "open" in classes(open_bar) and open_bar.get("stroke-dasharray")
    assert span(9)[1] == max(span(e)[1] for e in by_epoch)
    assert "still open" in "".join(open_bar.itertext())
    # wide bars are labeled with their epoch
    labels = {t.text for t in svg.iter(f"{SVG}text") if "win-label" in classes(t)}
    assert {"1", "2", "3", "7", "8", "9"} <= labels

    batch_tips = ["".join(el.itertext()) for el in svg.iter(f"{SVG}path") if "batch" in classes(el)]
    assert len(batch_tips) == 2
    assert any("epoch 1: 2 batches, 17 submissions" in t for t in batch_tips)
    assert any("epoch 7: 1 batches, 5 submissions" in t for t in batch_tips)

    fault_lines = [el for el in svg.iter(f"{SVG}line") if "fault" in classes(el)]
    assert sorted(c for el in fault_lines for c in classes(el) if c != "fault") == [
        "fault-crash",
        "fault-reorg",
    ]
    reorg = next(el for el in fault_lines if "fault-reorg" in classes(el))
    crash = next(el for el in fault_lines if "fault-crash" in classes(el))
    assert reorg.get("stroke") != crash.get("stroke")
    assert float(reorg.get("stroke-width", "0")) > 1.5  # reorgs stand out
    # the lines cross every lane
    lane_bgs = [el for el in svg.iter(f"{SVG}rect") if "lane-bg" in classes(el)]
    assert len(lane_bgs) == 2
    top = min(float(el.get("y", "0")) for el in lane_bgs)
    bottom = max(float(el.get("y", "0")) + float(el.get("height", "0")) for el in lane_bgs)
    for line in (reorg, crash):
        assert float(line.get("y1", "nan")) <= top and float(line.get("y2", "nan")) >= bottom
    # a reorg at block 210 lies between epoch 2's start (130) and epoch 8's start (200)...
    assert span(8)[0] < float(reorg.get("x1", "nan")) < span(3)[1]
    # fault tooltips carry the (escaped) detail
    page = render_html(record)
    assert "reorg at block 210: depth 3 &lt;rewind to 207&gt; &amp; replay" in page
    assert "crash at block 280: collector killed" in page
    # the legend names every fault kind
    legend = "".join(el.text or "" for el in svg.iter(f"{SVG}text"))
    for kind in ("rpc", "lag", "redis", "crash", "reorg", "relayer"):
        assert kind in legend


def test_empty_and_degenerate_records(tmp_path: Path) -> None:
    # nothing at all
    empty = SimRecord(seed=0, mode="evm", markets=[], faults_enabled=[])
    root = parse(write_report(tmp_path / "a", empty).read_text(encoding="utf-8"))
    svg_of(root)
    assert "no invariants checked" in render_html(empty)
    # one market, no windows, a single block
    one = SimRecord(
        seed=1, mode="evm", markets=[MARKET_A], faults_enabled=[], first_block=5, last_block=5
    )
    root = parse(write_report(tmp_path / "b", one).read_text(encoding="utf-8"))
    svg = svg_of(root)
    assert not [el for el in svg.iter(f"{SVG}rect") if "win" in classes(el)]
    # the range is unset: the data's own range is used; a fault of an unknown kind
    odd = SimRecord(
        seed=2,
        mode="fast",
        markets=[MARKET_A],
        faults_enabled=["weird"],
        windows=[WindowSpan(MARKET_A, 1, 1_000_000, 1_000_000)],
        faults=[FaultMark("weird<kind>", 1_000_001, "?")],
    )
    page = render_html(odd)
    root = parse(page)
    bars = [el for el in svg_of(root).iter(f"{SVG}rect") if "win" in classes(el)]
    assert len(bars) == 1 and float(bars[0].get("width", "0")) >= 1
    assert "weird&lt;kind&gt;" in page


def test_ten_markets_five_thousand_windows(tmp_path: Path) -> None:
    rng = random.Random(7)
    markets = [f"0x{i:040x}" for i in range(10)]
    windows: list[WindowSpan] = []
    batches: list[BatchMark] = []
    for epoch in range(5000):
        market = markets[epoch % 10]
        opened = 1_000 + epoch * 4 + rng.randrange(4)
        closed = None if epoch >= 4990 else opened + rng.randrange(5, 60)
        windows.append(WindowSpan(market, epoch, opened, closed))
        if closed is not None and epoch % 3 == 0:
            batches.append(BatchMark(market, epoch, rng.randrange(1, 4), rng.randrange(50), closed))
    faults = [
        FaultMark(kind, 1_000 + rng.randrange(20_000), f"fault {i}")
        for i, kind in enumerate(["rpc", "lag", "redis", "crash", "reorg", "relayer"] * 20)
    ]
    record = SimRecord(
        seed=9,
        mode="fast",
        markets=markets,
        faults_enabled=["rpc", "lag", "redis", "crash", "reorg", "relayer"],
        first_block=1_000,
        last_block=21_100,
        windows=windows,
        batches=batches,
        faults=faults,
        invariants=[InvariantResult("x", True, "")],
        summary={"windows": 5000},
    )
    started = time.perf_counter()
    path = write_report(tmp_path, record)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0
    assert path.stat().st_size < 5_000_000
    svg = svg_of(parse(path.read_text(encoding="utf-8")))
    assert float(svg.get("width", "0")) <= 1200
    assert float(svg.get("height", "0")) <= 2000
    bars = [el for el in svg.iter(f"{SVG}rect") if "win" in classes(el)]
    assert len(bars) == 5000
    assert not [el for el in svg.iter(f"{SVG}text") if "win-label" in classes(el)]
    assert len([el for el in svg.iter(f"{SVG}line") if "fault" in classes(el)]) == 120


def test_summary_table() -> None:
    table = summary_table(small_record())
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "42" in text and "fast" in text and "ab12cd34ef" in text
    assert "blocks" in text and "301" in text
    assert "<b>x</b>" in text  # shown as is, not read as markup
    assert "no_lost_submissions" in text and "ok" in text
    assert "batches<=windows" in text and "FAILED" in text
    assert 'epoch 8: "2" batches & 1 window' in text
    assert "1 of 2 invariant(s) FAILED" in text
