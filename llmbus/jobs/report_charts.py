"""Static inline SVG charts for the analysts' replay report.

The report is one self-contained HTML file that analysts open offline, attach to tickets and
print, so its charts are plain SVG strings built here: no scripts, no external stylesheet and
no plotting library on the machine that runs the job. Each chart carries a title, labelled
axes with "nice" tick values, a legend where two series share it, hover titles on every mark
and an aria-label, so it reads correctly at a glance and to a screen reader. Parts carry CSS
classes (``chart``, ``axis x``/``axis y``, ``tick``, ``axis-label``, ``legend``, ``mark``) so
a page stylesheet or a test can find them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

ORIGINAL_COLOUR = "#7a7a7a"
REPLAY_COLOUR = "#2563eb"
WIDTH, HEIGHT = 520, 320
LEFT, RIGHT, TOP, BOTTOM = 72, 20, 48, 52
"""Margins: room for a "150,000" y tick, the axis titles, and the chart title with legend."""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _finite(values: Sequence[float]) -> list[float]:
    # A failed replay can leave NaN (no similarity, no timing); it has no place on an axis.
    return [float(v) for v in values if math.isfinite(v)]


def format_number(value: float, decimals: int | None = None) -> str:
    """Compact text for a value: ``12,000``, ``3``, ``0.25``, ``1.23e-05``.

    Ticks pass their step's ``decimals``: 12.35 next to 12.3 must not both read "12.3".
    """
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    if decimals is None and abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:,.{decimals or 0}f}"


def _spread(lo: float, hi: float) -> tuple[float, float]:
    # A zero-width range would divide by zero in every scale: widen it around the value so a
    # single value (or all-equal values) sits mid-axis.
    lo, hi = min(lo, hi), max(lo, hi)
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad


def _decimals(step: float) -> int:
    # Enough decimals to tell neighbouring ticks apart, and no more (0.2 -> 1, 50 -> 0).
    return max(0, -math.floor(math.log10(step) + 1e-9))


def nice_ticks(lo: float, hi: float, target: int = 5, *, integer: bool = False) -> list[float]:
    """Tick values on a 1, 2 or 5 x 10^k step that cover ``lo..hi``, about ``target`` of them.

    ``integer`` keeps the step at 1 or more (counts of requests have no half values).
    """
    lo, hi = _spread(lo, hi)
    raw = (hi - lo) / max(1, target - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    steps = [m * power for m in (1, 2, 5, 10)]
    if integer:
        steps = [float(max(1, round(s))) for s in steps]

    def span(step: float) -> tuple[int, int]:
        # The tolerance stops float noise (0.6 / 0.2 = 2.999...) from adding a spare tick.
        return math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)

    def badness(step: float) -> tuple[int, int]:
        first, last = span(step)
        return abs(last - first + 1 - target), last - first

    step = min(steps, key=badness)
    first, last = span(step)
    digits = _decimals(step)
    return [round(k * step, digits) + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0"


def bin_counts(values: Sequence[float], *, bins: int, lo: float, hi: float) -> list[int]:
    """How many values fall in each of ``bins`` equal bins over ``lo..hi``.

    Values outside the range go to the edge bins, so the bars always add up to the number of
    values (a similarity of 1.0000001 from float noise still counts as a pair).
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    lo, hi = _spread(lo, hi)
    counts = [0] * bins
    for v in _finite(values):
        # Multiply before dividing: 0.3 * 10 / 1 is exactly 3, 0.3 / 0.1 is 2.999...
        counts[min(bins - 1, max(0, math.floor((v - lo) * bins / (hi - lo))))] += 1
    return counts


@dataclass(frozen=True)
class _Axis:
    ticks: list[float]
    start: float
    """Pixel of the first tick; ``end`` is the pixel of the last one."""
    end: float

    def px(self, value: float) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return round(self.start + (value - lo) / (hi - lo) * (self.end - self.start), 1)

    def label(self, value: float) -> str:
        return format_number(value, _decimals(self.ticks[1] - self.ticks[0]))


def _x_axis(lo: float, hi: float) -> _Axis:
    return _Axis(nice_ticks(lo, hi), LEFT, WIDTH - RIGHT)


def _y_axis(lo: float, hi: float, *, integer: bool = False) -> _Axis:
    return _Axis(nice_ticks(lo, hi, integer=integer), HEIGHT - BOTTOM, TOP)


def _chart(
    title: str, x_label: str, y_label: str, x: _Axis, y: _Axis, marks: list[str], summary: str
) -> str:
    # Presentation attributes rather than a <style> block: several charts share one page, and
    # a stylesheet inside one SVG would restyle all of them.
    base, top, left, right = HEIGHT - BOTTOM, TOP, LEFT, WIDTH - RIGHT
    mid_x, mid_y = (left + right) / 2, (top + base) / 2
    ink = 'stroke="#444"'
    grid, xs, ys = [], [f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" {ink}/>'], []
    ys.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" {ink}/>')
    for t in x.ticks:
        p = x.px(t)
        grid.append(f'<line x1="{p}" y1="{top}" x2="{p}" y2="{base}"/>')
        xs.append(f'<line x1="{p}" y1="{base}" x2="{p}" y2="{base + 5}" {ink}/>')
        xs.append(f'<text class="tick" x="{p}" y="{base + 18}" text-anchor="middle">')
        xs.append(f"{x.label(t)}</text>")
    for t in y.ticks:
        p = y.px(t)
        grid.append(f'<line x1="{left}" y1="{p}" x2="{right}" y2="{p}"/>')
        ys.append(f'<line x1="{left - 5}" y1="{p}" x2="{left}" y2="{p}" {ink}/>')
        ys.append(f'<text class="tick" x="{left - 8}" y="{p}" dy="4" text-anchor="end">')
        ys.append(f"{y.label(t)}</text>")
    xs.append(f'<text class="axis-label" x="{mid_x}" y="{HEIGHT - 12}" text-anchor="middle" ')
    xs.append(f'font-size="12">{_esc(x_label)}</text>')
    ys.append(f'<text class="axis-label" x="16" y="{mid_y}" text-anchor="middle" font-size="12" ')
    ys.append(f'transform="rotate(-90 16 {mid_y})">{_esc(y_label)}</text>')
    if not marks:
        summary = "no data"
        marks = [f'<text class="no-data" x="{mid_x}" y="{mid_y}" text-anchor="middle" ']
        marks.append('font-size="14" fill="#666">no data</text>')
    head = (
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{_esc(f"{title}: {summary}")}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="system-ui, sans-serif" font-size="11" '
        f'fill="#222"><title>{_esc(title)}</title><text class="chart-title" x="{left}" y="20" '
        f'font-size="14" font-weight="600">{_esc(title)}</text><g class="grid" stroke="#e5e7eb">'
    )
    body = [*grid, '</g><g class="axis x">', *xs, '</g><g class="axis y">', *ys, "</g>", *marks]
    return "".join([head, *body, "</svg>"])


def _bars(
    counts: list[int], lo: float, hi: float, x: _Axis, y: _Axis, series: str, slot: int, unit: str
) -> list[str]:
    # Two series share each bin side by side (slot 0 and 1), so neither hides the other the
    # way overlapping translucent bars do; a lone series (no name) takes the whole bin.
    colour = ORIGINAL_COLOUR if series == "original" else REPLAY_COLOUR
    prefix, cls, slots = (f"{series}, ", f"mark {series}", 2) if series else ("", "mark", 1)
    out, width = [], (hi - lo) / len(counts)
    for i, n in enumerate(counts):
        a, b = lo + i * width, lo + (i + 1) * width
        slot_w = (x.px(b) - x.px(a)) / slots
        bx, top = round(x.px(a) + slot * slot_w + 1, 1), y.px(n)
        tip = f"{prefix}{format_number(a)} to {format_number(b)}: {n} {unit}"
        out.append(
            f'<rect class="{cls}" data-count="{n}" x="{bx}" y="{top}" '
            f'width="{max(slot_w - 2, 1):.1f}" height="{y.px(0) - top:.1f}" fill="{colour}">'
            f"<title>{_esc(tip)}</title></rect>"
        )
    return out


def _legend() -> str:
    x0, items = WIDTH - RIGHT - 150, [("original", ORIGINAL_COLOUR), ("replay", REPLAY_COLOUR)]
    return (
        '<g class="legend">'
        + "".join(
            f'<rect x="{x0 + i * 75}" y="28" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x0 + i * 75 + 14}" y="37">{name}</text>'
            for i, (name, colour) in enumerate(items)
        )
        + "</g>"
    )


def histogram(
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    y_label: str = "pairs",
    bins: int = 10,
    lo: float | None = None,
    hi: float | None = None,
) -> str:
    """Bars of how many values fall in each of ``bins`` equal bins (e.g. similarity 0..1)."""
    data = _finite(values)
    start, stop = _spread(
        min(data, default=0.0) if lo is None else lo, max(data, default=1.0) if hi is None else hi
    )
    counts = bin_counts(data, bins=bins, lo=start, hi=stop)
    x, y = _x_axis(start, stop), _y_axis(0, max(counts) or 1, integer=True)
    marks = _bars(counts, start, stop, x, y, "", 0, y_label) if data else []
    summary = f"histogram of {len(data)} {y_label} by {x_label}"
    return _chart(title, x_label, y_label, x, y, marks, summary)


def paired_histogram(
    original: Sequence[float],
    replay: Sequence[float],
    *,
    title: str,
    x_label: str,
    y_label: str = "requests",
    bins: int = 12,
) -> str:
    """Original and replay distributions over the same bins (e.g. TTFT in ms), side by side."""
    old, new = _finite(original), _finite(replay)
    start, stop = _spread(min(old + new, default=0.0), max(old + new, default=1.0))
    old_counts = bin_counts(old, bins=bins, lo=start, hi=stop)
    new_counts = bin_counts(new, bins=bins, lo=start, hi=stop)
    x, y = _x_axis(start, stop), _y_axis(0, max(old_counts + new_counts) or 1, integer=True)
    marks = []
    if old or new:
        marks += _bars(old_counts, start, stop, x, y, "original", 0, y_label)
        marks += _bars(new_counts, start, stop, x, y, "replay", 1, y_label)
        marks.append(_legend())
    summary = f"{len(old)} original and {len(new)} replay {y_label} by {x_label}"
    return _chart(title, x_label, y_label, x, y, marks, summary)


def scatter(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    diagonal: bool = True,
) -> str:
    """One dot per pair (e.g. original vs replay output tokens), hover title with its values.

    With ``diagonal`` both axes share one range and a dashed y = x line marks "unchanged", so
    a dot above it is a value that grew in the replay.
    """
    pts = [(float(a), float(b)) for a, b in points if math.isfinite(a) and math.isfinite(b)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if diagonal:
        xs = ys = xs + ys
    x = _x_axis(min(xs, default=0.0), max(xs, default=1.0))
    y = _y_axis(min(ys, default=0.0), max(ys, default=1.0))
    marks = [
        # Translucent, so a pile of identical pairs reads darker than a lone one.
        f'<circle class="mark" cx="{x.px(a)}" cy="{y.px(b)}" r="3.5" fill="{REPLAY_COLOUR}" '
        f'fill-opacity="0.6"><title>{_esc(x_label)}: {format_number(a)}, {_esc(y_label)}: '
        f"{format_number(b)}</title></circle>"
        for a, b in pts
    ]
    summary = f"{len(pts)} points, {y_label} against {x_label}"
    if diagonal and pts:
        lo, hi = x.ticks[0], x.ticks[-1]
        x1, y1, x2, y2 = x.px(lo), y.px(lo), x.px(hi), y.px(hi)
        summary += ", dashed line y = x"
        marks.insert(
            0,
            f'<line class="diagonal" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" '
            f'stroke="{ORIGINAL_COLOUR}" stroke-dasharray="5 4"/><text class="diagonal-label" '
            f'x="{x2 - 4:.1f}" y="{y2 + 14:.1f}" text-anchor="end" fill="{ORIGINAL_COLOUR}">'
            "y = x</text>",
        )
    return _chart(title, x_label, y_label, x, y, marks, summary)
