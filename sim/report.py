"""A simulation run's report: one self-contained HTML page, and a rich table for the terminal.

`write_report(out_dir, record)` writes `out_dir/report.html`: a title with the seed, the mode
and the digest, the summary and the invariants as tables, and a timeline as inline SVG (no
scripts, no external resources, every text escaped). The timeline has the block numbers on
its x axis and one lane per market: each submission window is a bar from the block that opened
it to the block that closed it (still-open windows run dashed to the last block), stacked in
sub-rows so that no two bars overlap; committed batches are diamonds in a strip at the bottom
of their market's lane; faults are vertical lines across every lane, one colour per kind,
reorgs thickest. Hovering a bar, a diamond or a fault line shows its details (SVG `<title>`).

The page is also well-formed XML (polyglot XHTML), so tests can parse it with ElementTree.

`summary_table(record)` is the same summary and invariants as a `rich.table.Table`.
"""

from __future__ import annotations

import heapq
import html
import math
from collections import Counter, defaultdict
from pathlib import Path

from rich.table import Table
from rich.text import Text

from sim.record import BatchMark, FaultMark, SimRecord, WindowSpan

__all__ = [
    "FAULT_COLORS",
    "REPORT_NAME",
    "render_html",
    "render_timeline_svg",
    "summary_table",
    "write_report",
]

REPORT_NAME = "report.html"

# One colour per fault kind (the kinds FaultMark documents); any other kind is drawn grey.
FAULT_COLORS: dict[str, str] = {
    "rpc": "#f59e0b",
    "lag": "#a855f7",
    "redis": "#0d9488",
    "crash": "#111827",
    "reorg": "#e11d48",
    "relayer": "#65a30d",
    "deepreorg": "#7f1d1d",
    "failover": "#2563eb",
}
_OTHER_FAULT_COLOR = "#6b7280"
_FAULT_WIDTH: dict[str, float] = {"reorg": 2.5, "deepreorg": 3.0, "crash": 2.0}

# Geometry of the timeline, in SVG user units (pixels at 100 %).
_WIDTH = 1200
_LEFT = 130  # the market labels
_RIGHT = 20
_PLOT_W = _WIDTH - _LEFT - _RIGHT
_TOP = 44  # the axis labels above the lanes
_LANE_GAP = 6
_LANE_PAD = 4
_BATCH_STRIP = 12  # the batch diamonds, at the bottom of each lane
_ROW_H = 14.0  # a window row at full size ...
_MIN_ROW_H = 2.0  # ... and at its smallest, when a lane has many sub-rows
_LANE_ROWS_BUDGET = 120.0  # the most height a lane's window rows take
_MAX_ROWS = int(_LANE_ROWS_BUDGET // _MIN_ROW_H)  # beyond it, bars share rows (and may overlap)
_MIN_BAR_W = 1.5
_ROW_GAP_PX = 1.0  # horizontal room kept between two bars in the same sub-row
_THIN_WINDOWS = 2000  # above this many windows: thin bars, no outlines, no labels
_LEGEND_H = 40
_TABLE_ROWS_MAX = 500  # the faults table lists at most this many


def write_report(out_dir: Path, record: SimRecord) -> Path:
    """Write `out_dir/report.html` (creating `out_dir` if needed) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    path.write_text(render_html(record), encoding="utf-8")
    return path


def summary_table(record: SimRecord) -> Table:
    """The summary values, then the invariants (green ok / red FAILED), as a rich Table."""
    failed = sum(1 for inv in record.invariants if not inv.ok)
    table = Table(
        title=f"sim seed {record.seed} · {record.mode} · digest {record.digest or '-'}",
        caption=_verdict(len(record.invariants), failed),
        caption_style="bold red" if failed else "green",
        show_lines=False,
    )
    table.add_column("name", style="bold")
    table.add_column("value")
    table.add_column("detail", overflow="fold")
    for key, value in record.summary.items():
        table.add_row(Text(str(key)), Text(_fmt(value)), Text(""))
    if record.invariants:
        table.add_section()
        for inv in record.invariants:
            status = Text("ok", style="green") if inv.ok else Text("FAILED", style="bold red")
            table.add_row(Text(inv.name), status, Text(inv.detail))
    return table


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#111827;background:#fff}
h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:24px 0 8px}
.meta{color:#4b5563;font-size:13px;margin:2px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;margin:8px 0}
.verdict.ok{background:#dcfce7;color:#166534}
.verdict.fail{background:#fee2e2;color:#991b1b}
.tables{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{color:#15803d;font-weight:600}
td.fail{color:#b91c1c;font-weight:700}
tr.fail td{background:#fef2f2}
.timeline{overflow-x:auto}
svg.tl{max-width:100%;height:auto;font-family:system-ui,sans-serif}
.empty{color:#6b7280;font-style:italic}
"""


def render_html(record: SimRecord) -> str:
    """The whole report page, as a string."""
    e = _esc
    failed = sum(1 for inv in record.invariants if not inv.ok)
    title = f"sim report: seed {record.seed}, mode {record.mode}, digest {record.digest or '-'}"
    verdict_class = "fail" if failed else "ok"
    lo, hi = _block_domain(record)
    parts: list[str] = [
        "<!DOCTYPE html>\n",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n<head>\n',
        '<meta charset="utf-8"/>\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n',
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<h1>Simulation seed <code>{e(str(record.seed))}</code> · mode "
        f"<code>{e(record.mode)}</code></h1>\n",
        f'<p class="meta">digest <code>{e(record.digest or "-")}</code></p>\n',
        f'<p class="meta">blocks {e(str(lo))}–{e(str(hi))} · {len(record.markets)} market(s) · '
        f"{len(record.windows)} window(s) · {len(record.batches)} batch commit(s) · "
        f"{len(record.faults)} fault(s) · faults enabled: "
        f"{e(', '.join(record.faults_enabled) or 'none')}</p>\n",
        f'<div class="verdict {verdict_class}">'
        f"{e(_verdict(len(record.invariants), failed))}</div>\n",
        '<div class="tables">\n',
        _summary_html(record),
        _invariants_html(record),
        "</div>\n<h2>Timeline</h2>\n",
        '<div class="timeline">\n',
        render_timeline_svg(record),
        "</div>\n",
        _faults_html(record),
        "</body>\n</html>\n",
    ]
    return "".join(parts)


def _summary_html(record: SimRecord) -> str:
    rows = "".join(
        f'<tr><td>{_esc(str(k))}</td><td class="num">{_esc(_fmt(v))}</td></tr>\n'
        for k, v in record.summary.items()
    )
    if not rows:
        rows = '<tr><td colspan="2" class="empty">no summary</td></tr>\n'
    return (
        '<section>\n<h2>Summary</h2>\n<table class="summary">\n'
        "<tr><th>key</th><th>value</th></tr>\n" + rows + "</table>\n</section>\n"
    )


def _invariants_html(record: SimRecord) -> str:
    rows: list[str] = []
    for inv in record.invariants:
        if inv.ok:
            rows.append(
                f'<tr class="ok"><td>{_esc(inv.name)}</td><td class="ok">ok</td>'
                f"<td>{_esc(inv.detail)}</td></tr>\n"
            )
        else:
            rows.append(
                f'<tr class="fail"><td>{_esc(inv.name)}</td><td class="fail">FAILED</td>'
                f"<td>{_esc(inv.detail)}</td></tr>\n"
            )
    if not rows:
        rows.append('<tr><td colspan="3" class="empty">no invariants checked</td></tr>\n')
    return (
        '<section>\n<h2>Invariants</h2>\n<table class="invariants">\n'
        "<tr><th>invariant</th><th>result</th><th>detail</th></tr>\n"
        + "".join(rows)
        + "</table>\n</section>\n"
    )


def _faults_html(record: SimRecord) -> str:
    if not record.faults:
        return ""
    faults = sorted(record.faults, key=lambda f: f.block)
    rows = "".join(
        f'<tr><td class="num">{f.block}</td>'
        f'<td><span style="color:{_fault_color(f.kind)}">■</span> {_esc(f.kind)}</td>'
        f"<td>{_esc(f.detail)}</td></tr>\n"
        for f in faults[:_TABLE_ROWS_MAX]
    )
    more = ""
    if len(faults) > _TABLE_ROWS_MAX:
        more = f'<p class="meta">… and {len(faults) - _TABLE_ROWS_MAX} more fault(s)</p>\n'
    return (
        '<h2>Faults</h2>\n<table class="faults">\n'
        "<tr><th>block</th><th>kind</th><th>detail</th></tr>\n" + rows + "</table>\n" + more
    )


# ---------------------------------------------------------------------------------------------
# SVG timeline


class _Scale:
    """Block number -> x, over [lo, hi] onto the plot's width."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        self.span = max(hi - lo, 1)

    def x(self, block: int) -> float:
        block = min(max(block, self.lo), self.hi)
        return _LEFT + (block - self.lo) / self.span * _PLOT_W


def render_timeline_svg(record: SimRecord) -> str:
    """The timeline picture, as an inline `<svg>` element."""
    lo, hi = _block_domain(record)
    scale = _Scale(lo, hi)
    thin = len(record.windows) > _THIN_WINDOWS
    markets = _lane_markets(record)

    windows_by_market: dict[str, list[WindowSpan]] = defaultdict(list)
    for w in record.windows:
        windows_by_market[w.market].append(w)
    batches_by_market: dict[str, list[BatchMark]] = defaultdict(list)
    for b in record.batches:
        batches_by_market[b.market].append(b)

    body: list[str] = []
    y = float(_TOP)
    lanes_top = y
    for index, market in enumerate(markets):
        lane, height = _lane_svg(
            market,
            index,
            y,
            windows_by_market.get(market, []),
            batches_by_market.get(market, []),
            scale,
            thin,
        )
        body.append(lane)
        y += height + _LANE_GAP
    if not markets:
        body.append(
            f'<text x="{_LEFT + _PLOT_W / 2:.1f}" y="{y + 24:.1f}" text-anchor="middle" '
            'font-size="13" fill="#6b7280">no markets</text>\n'
        )
        y += 40
    lanes_bottom = y - (_LANE_GAP if markets else 0)
    if markets and not record.windows:
        body.append(
            f'<text x="{_LEFT + _PLOT_W / 2:.1f}" y="{lanes_top + 14:.1f}" '
            'text-anchor="middle" font-size="12" fill="#6b7280">no windows</text>\n'
        )

    axis = _axis_svg(scale, lanes_top, lanes_bottom)
    faults = _faults_svg(record.faults, scale, lanes_top, lanes_bottom)
    legend_y = lanes_bottom + 14
    legend = _legend_svg(record.faults, legend_y)
    height = legend_y + _LEGEND_H

    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tl" width="{_WIDTH}" '
        f'height="{height:.0f}" viewBox="0 0 {_WIDTH} {height:.0f}" role="img" '
        f'aria-label="timeline of blocks {lo} to {hi}">\n'
        f'<rect x="0" y="0" width="{_WIDTH}" height="{height:.0f}" fill="#ffffff"/>\n'
        + axis
        + "".join(body)
        + faults
        + legend
        + "</svg>\n"
    )


def _lane_svg(
    market: str,
    index: int,
    top: float,
    windows: list[WindowSpan],
    batches: list[BatchMark],
    scale: _Scale,
    thin: bool,
) -> tuple[str, float]:
    """One market's lane, and its height."""
    placed, rows = _assign_rows(windows, scale)
    row_h = _ROW_H if rows * _ROW_H <= _LANE_ROWS_BUDGET else _LANE_ROWS_BUDGET / max(rows, 1)
    row_h = max(row_h, _MIN_ROW_H)
    rows_h = max(rows, 1) * row_h
    height = _LANE_PAD + rows_h + _LANE_PAD + _BATCH_STRIP
    bar_h = max(row_h - (1.0 if row_h >= 4 else 0.0), 1.0)
    e = _esc

    out: list[str] = [
        f'<g class="lane" data-market="{e(market)}">\n',
        f'<rect class="lane-bg" x="{_LEFT}" y="{top:.1f}" width="{_PLOT_W}" '
        f'height="{height:.1f}" fill="{"#f8fafc" if index % 2 == 0 else "#eef2f7"}"/>\n',
        f'<text x="{_LEFT - 8}" y="{top + height / 2 + 4:.1f}" text-anchor="end" '
        f'font-size="12" font-family="ui-monospace,monospace" fill="#1f2937">'
        f"<title>{e(market)}</title>{e(_short(market))}</text>\n",
    ]
    label_ok = not thin and row_h >= 10
    for w, x0, x1, row in placed:
        y = top + _LANE_PAD + row * row_h
        open_ended = w.closed_block is None
        end = w.closed_block if w.closed_block is not None else scale.hi
        tip = f"{market} epoch {w.epoch}: blocks {w.opened_block}–{end}" + (
            " (still open)" if open_ended else ""
        )
        cls = "win open" if open_ended else "win"
        if thin:
            style = 'fill="#93c5fd" fill-opacity="0.55"' if open_ended else 'fill="#3b82f6"'
        elif open_ended:
            style = (
                'fill="#bfdbfe" fill-opacity="0.6" stroke="#2563eb" stroke-width="1" '
                'stroke-dasharray="4 3"'
            )
        else:
            style = 'fill="#60a5fa" stroke="#1d4ed8" stroke-width="0.6"'
        out.append(
            f'<rect class="{cls}" x="{x0:.2f}" y="{y:.2f}" width="{x1 - x0:.2f}" '
            f'height="{bar_h:.2f}" {style}><title>{e(tip)}</title></rect>\n'
        )
        label = str(w.epoch)
        if label_ok and (x1 - x0) >= 6.5 * len(label) + 4:
            out.append(
                f'<text class="win-label" x="{(x0 + x1) / 2:.2f}" y="{y + bar_h - 3:.2f}" '
                f'text-anchor="middle" font-size="10" fill="#0b1f44" '
                f'pointer-events="none">{e(label)}</text>\n'
            )

    strip_y = top + _LANE_PAD + rows_h + _LANE_PAD + _BATCH_STRIP / 2
    r = 4.0 if len(batches) <= 2000 else 3.0
    for b in sorted(batches, key=lambda b: (b.block, b.epoch)):
        x = scale.x(b.block)
        tip = f"epoch {b.epoch}: {b.batches} batches, {b.submissions} submissions"
        out.append(
            f'<path class="batch" d="M{x:.2f} {strip_y - r:.2f}l{r} {r}l{-r} {r}l{-r} {-r}z" '
            f'fill="#f97316" stroke="#7c2d12" stroke-width="0.6">'
            f"<title>{e(tip)} (block {b.block})</title></path>\n"
        )
    out.append("</g>\n")
    return "".join(out), height


def _assign_rows(
    windows: list[WindowSpan], scale: _Scale
) -> tuple[list[tuple[WindowSpan, float, float, int]], int]:
    """Each window's bar [x0, x1] and sub-row, so that bars in a row never overlap (up to
    `_MAX_ROWS` rows, beyond which a bar goes to the row that frees first); the row count."""
    ordered = sorted(windows, key=lambda w: (w.opened_block, w.epoch))
    placed: list[tuple[WindowSpan, float, float, int]] = []
    busy: list[tuple[float, int]] = []  # (x where the row's last bar ends, row), a min-heap
    free: list[int] = []  # rows whose last bar has ended, a min-heap (lowest row first)
    rows = 0
    for w in ordered:
        end = w.closed_block if w.closed_block is not None else scale.hi
        x0 = scale.x(w.opened_block)
        x1 = max(scale.x(max(end, w.opened_block)), x0 + _MIN_BAR_W)
        while busy and busy[0][0] + _ROW_GAP_PX <= x0:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            row = heapq.heappop(free)
        elif rows < _MAX_ROWS:
            row = rows
            rows += 1
        else:
            row = heapq.heappop(busy)[1]
        heapq.heappush(busy, (x1, row))
        placed.append((w, x0, x1, row))
    return placed, rows


def _axis_svg(scale: _Scale, top: float, bottom: float) -> str:
    out = [
        f'<line x1="{_LEFT}" y1="{top - 2:.1f}" x2="{_LEFT + _PLOT_W}" y2="{top - 2:.1f}" '
        'stroke="#6b7280" stroke-width="1"/>\n',
        f'<text x="{_LEFT - 8}" y="{top - 22:.1f}" text-anchor="end" font-size="11" '
        'fill="#6b7280">block</text>\n',
    ]
    for tick in _ticks(scale.lo, scale.hi):
        x = scale.x(tick)
        out.append(
            f'<line class="tick" x1="{x:.2f}" y1="{top - 7:.1f}" x2="{x:.2f}" '
            f'y2="{bottom:.1f}" stroke="#d1d5db" stroke-width="0.7"/>\n'
            f'<text x="{x:.2f}" y="{top - 11:.1f}" text-anchor="middle" font-size="11" '
            f'fill="#374151">{tick}</text>\n'
        )
    return "".join(out)


def _ticks(lo: int, hi: int, target: int = 10) -> list[int]:
    """Round block numbers in [lo, hi], about `target` of them, always including lo and hi
    when there is room."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    magnitude = 10 ** max(math.floor(math.log10(raw)), 0) if raw >= 1 else 1
    step = magnitude
    for m in (1, 2, 5, 10):
        if m * magnitude >= raw:
            step = m * magnitude
            break
    first = -(-lo // step) * step
    ticks = list(range(first, hi + 1, step))
    min_gap = step * 0.45  # keep the end labels from colliding with a round tick
    if not ticks or ticks[0] - lo >= min_gap:
        ticks.insert(0, lo)
    if hi - ticks[-1] >= min_gap:
        ticks.append(hi)
    return ticks


def _faults_svg(faults: list[FaultMark], scale: _Scale, top: float, bottom: float) -> str:
    # Reorgs last, so that they are drawn over the other faults.
    ordered = sorted(faults, key=lambda f: (f.kind in ("reorg", "deepreorg"), f.block))
    out: list[str] = ['<g class="faults">\n']
    for f in ordered:
        x = scale.x(f.block)
        color = _fault_color(f.kind)
        width = _FAULT_WIDTH.get(f.kind, 1.3)
        tip = f"{f.kind} at block {f.block}: {f.detail}"
        kind = _css_ident(f.kind)
        extra = ""
        if f.kind in ("reorg", "deepreorg"):
            extra = (
                f'<rect x="{x - 4:.2f}" y="{top:.1f}" width="8" height="{bottom - top:.1f}" '
                f'fill="{color}" fill-opacity="0.12"/>'
                f'<path d="M{x - 6:.2f} {top - 8:.1f}h12l-6 8z" fill="{color}"/>'
            )
        out.append(
            f'<g class="fault-mark"><title>{_esc(tip)}</title>{extra}'
            f'<line class="fault fault-{kind}" x1="{x:.2f}" y1="{top - 2:.1f}" x2="{x:.2f}" '
            f'y2="{bottom:.1f}" stroke="{color}" stroke-width="{width}" stroke-opacity="0.9"/>'
            f'<line x1="{x:.2f}" y1="{top:.1f}" x2="{x:.2f}" y2="{bottom:.1f}" '
            'stroke="#000" stroke-opacity="0" stroke-width="7"/></g>\n'
        )
    out.append("</g>\n")
    return "".join(out)


def _legend_svg(faults: list[FaultMark], y: float) -> str:
    counts = Counter(f.kind for f in faults)
    out: list[str] = ['<g class="legend" font-size="11" fill="#374151">\n']
    x = float(_LEFT)
    row_y = y + 8

    def swatch_text(label: str) -> None:
        nonlocal x
        out.append(f'<text x="{x:.1f}" y="{row_y + 4:.1f}">{_esc(label)}</text>\n')
        x += 7 * len(label) + 18

    out.append(
        f'<rect x="{x:.1f}" y="{row_y - 5:.1f}" width="22" height="10" fill="#60a5fa" '
        'stroke="#1d4ed8" stroke-width="0.6"/>\n'
    )
    x += 28
    swatch_text("window")
    out.append(
        f'<rect x="{x:.1f}" y="{row_y - 5:.1f}" width="22" height="10" fill="#bfdbfe" '
        'stroke="#2563eb" stroke-dasharray="4 3"/>\n'
    )
    x += 28
    swatch_text("still open")
    out.append(
        f'<path d="M{x + 5:.1f} {row_y - 4:.1f}l4 4l-4 4l-4 -4z" fill="#f97316" '
        'stroke="#7c2d12" stroke-width="0.6"/>\n'
    )
    x += 14
    swatch_text("batches committed")

    kinds = list(FAULT_COLORS) + sorted(k for k in counts if k not in FAULT_COLORS)
    row_y += 18
    x = float(_LEFT)
    for kind in kinds:
        color = _fault_color(kind)
        width = _FAULT_WIDTH.get(kind, 1.3)
        out.append(
            f'<line x1="{x + 4:.1f}" y1="{row_y - 7:.1f}" x2="{x + 4:.1f}" y2="{row_y + 7:.1f}" '
            f'stroke="{color}" stroke-width="{width + 0.7}"/>\n'
        )
        x += 12
        swatch_text(f"{kind} ({counts.get(kind, 0)})")
    out.append("</g>\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# helpers


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _fmt(value: int | float | str) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _verdict(total: int, failed: int) -> str:
    if total == 0:
        return "no invariants checked"
    if failed:
        return f"{failed} of {total} invariant(s) FAILED"
    return f"all {total} invariant(s) ok"


def _short(market: str) -> str:
    return market if len(market) <= 14 else f"{market[:6]}…{market[-4:]}"


def _css_ident(kind: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in kind)


def _fault_color(kind: str) -> str:
    return FAULT_COLORS.get(kind, _OTHER_FAULT_COLOR)


def _lane_markets(record: SimRecord) -> list[str]:
    """The record's markets in order, then any market seen only in windows or batches."""
    seen = dict.fromkeys(record.markets)
    for w in record.windows:
        seen.setdefault(w.market)
    for b in record.batches:
        seen.setdefault(b.market)
    return list(seen)


def _block_domain(record: SimRecord) -> tuple[int, int]:
    """The x axis' block range: first_block..last_block, widened to take in every block the
    record mentions; when the record's range is unset (last <= first), the data's range."""
    points: list[int] = []
    for w in record.windows:
        points.append(w.opened_block)
        if w.closed_block is not None:
            points.append(w.closed_block)
    points.extend(b.block for b in record.batches)
    points.extend(f.block for f in record.faults)
    lo, hi = record.first_block, record.last_block
    if hi <= lo:
        if points:
            lo, hi = min(points), max(points)
        return lo, max(hi, lo)
    if points:
        lo, hi = min(lo, *points), max(hi, *points)
    return lo, hi
