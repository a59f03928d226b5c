"""Charts of the HTML reports, laid out here and drawn as inline SVG by ``templates/charts.html``.

Layout is pure: scales, ticks and every mark in pixel coordinates. The template only writes the
elements out, so each text in a chart (a column name, a class) goes through Jinja's autoescaping.
Every data mark carries its value in ``data-`` attributes (``data-x``, ``data-y``...), which a
reader of the page, or a test, can take back without reversing the scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PALETTE = ("#1b6ca8", "#e6550d", "#31a354", "#756bb1", "#d6616b", "#8c6d31", "#17becf", "#7f7f7f")
STATUS_COLORS = {"ok": "#31a354", "warning": "#e6ab02", "alert": "#d7301f"}
#: Characters of a category shown under its tick.
LABEL_CHARS = 18
MUTED = {"reference": "#888888", "band": "#c6dbef", "coverage": "#e3ecf5", "cell": "#1b6ca8"}


@dataclass(frozen=True)
class Tick:
    """A tick: its pixel position along its axis and its label."""

    at: float
    label: str


@dataclass(frozen=True)
class Shape:
    """One SVG element: ``attrs`` are its attributes, ``title`` its tooltip, ``text`` a <text>'s content."""

    tag: str
    attrs: Mapping[str, Any]
    title: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Chart:
    """A chart: its plot box (pixels), axes with ticks and labels, and its marks."""

    kind: str
    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_label: str
    y_label: str
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    shapes: tuple[Shape, ...]
    slanted: bool = False
    y2_label: str | None = None
    y2_ticks: tuple[Tick, ...] = ()


@dataclass(frozen=True)
class Scale:
    """Values from ``low`` to ``high`` onto pixels from ``start`` to ``end``."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return round(self.start + (value - self.low) / span * (self.end - self.start), 1)

    def ticks(self, *, percent: bool = False) -> tuple[Tick, ...]:
        return tuple(Tick(self(v), f"{v:.0%}" if percent else number(v)) for v in nice_ticks(self.low, self.high))


def number(value: float) -> str:
    """A tick label: at most four significant digits, no float noise."""
    return f"{value:.4g}" if value != 0 else "0"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart; ``count`` to ``count`` + 2 intervals of
    them at most) from ``low`` to ``high``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    step = _nice_step((high - low) / (count + 2))
    first = math.ceil(low / step - 1e-9)
    return [round(i * step, 12) for i in range(first, math.floor(high / step + 1e-9) + 1)]


def nice_range(values: Sequence[float], *, zero: bool = False, pad: float = 0.05,
               count: int = 5) -> tuple[float, float]:
    """A range holding ``values`` (and 0, with ``zero``), widened a little, not across 0, to ends
    that are `nice_ticks` of it."""
    finite = [v for v in values if math.isfinite(v)]
    if zero:
        finite.append(0.0)
    if not finite or (zero and not any(finite)):
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        low, high = low - (abs(low) or 1.0) * 0.5, high + (abs(high) or 1.0) * 0.5
    margin = (high - low) * pad
    low = low - margin if low < 0 or low - margin >= 0 else 0.0
    high = high + margin if high > 0 or high + margin <= 0 else 0.0
    for _ in range(4):  # a wider range may take a longer step: round again until the ends stay
        step = _nice_step((high - low) / (count + 2))
        rounded = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
        if rounded == (low, high):
            break
        low, high = rounded
    return round(low, 12), round(high, 12)


def _nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * 0.999)


def _margins(*, slanted: Sequence[str] | None = None, right: float = 14.0) -> tuple[float, float, float, float]:
    """Left, top, right and bottom margins around the plot: room for the title and legend, ticks
    and axis labels; below, as much as the ``slanted`` tick labels take."""
    if slanted is None:
        return 62.0, 40.0, right, 48.0
    longest = max((len(label[:LABEL_CHARS]) for label in slanted), default=4)
    return 62.0, 40.0, right, round(38.0 + 3.5 * longest, 1)


def _legend(names: Sequence[str], colors: Sequence[str], width: int) -> list[Shape]:
    """A swatch and a name per series, right-aligned above the plot."""
    out, x = [], float(width - 8)
    for name, color in reversed(list(zip(names, colors, strict=True))):
        x -= 6 * len(name) + 26
        out += [Shape("rect", {"class": "legend", "x": round(x, 1), "y": 20, "width": 10, "height": 10,
                               "fill": color}),
                Shape("text", {"class": "legend", "x": round(x + 14, 1), "y": 29, "font-size": 10}, text=name)]
    return out


def _categories(labels: Sequence[str], scale_start: float, scale_end: float) -> tuple[list[float], tuple[Tick, ...]]:
    """Centres of ``labels`` as equal bands, and ticks for as many of them as fit."""
    n = max(len(labels), 1)
    step = (scale_end - scale_start) / n
    centres = [round(scale_start + (i + 0.5) * step, 1) for i in range(len(labels))]
    every = max(1, math.ceil(n / max(1, (scale_end - scale_start) // 22)))
    ticks = tuple(Tick(c, label[:LABEL_CHARS]) for i, (c, label) in enumerate(zip(centres, labels, strict=True))
                  if i % every == 0 or i == n - 1)
    return centres, ticks


def bars(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float]], *, x_label: str,
         y_label: str, percent: bool = True, kind: str = "bars", width: int = 460, height: int = 250) -> Chart:
    """Grouped bars: one group per category, one bar per series."""
    left, top, right, bottom = _margins(slanted=categories)
    values = [v for s in series.values() for v in s]
    low, high = nice_range(values, zero=True, pad=0.02)
    if percent and high > 1.0 >= max(values, default=0.0):
        high = 1.0  # no share above 100%
    y = Scale(low, high, height - bottom, top)
    centres, ticks = _categories(categories, left, width - right)
    band = (width - right - left) / max(len(categories), 1)
    bar_w = max(band * 0.8 / max(len(series), 1), 1.0)
    shapes: list[Shape] = []
    for j, ((name, heights), color) in enumerate(zip(series.items(), PALETTE, strict=False)):
        for centre, category, value in zip(centres, categories, heights, strict=True):
            x0 = centre - band * 0.4 + j * bar_w
            top_y = y(max(value, 0.0))
            shown = f"{value:.1%}" if percent else number(value)
            shapes.append(Shape("rect", {"class": "bar", "x": round(x0, 1), "y": top_y, "width": round(bar_w, 1),
                                         "height": round(y(0.0) - top_y, 1), "fill": color, "data-series": name,
                                         "data-x": category, "data-y": value}, title=f"{category}: {name} {shown}"))
    shapes += _legend(list(series), PALETTE[:len(series)], width)
    return Chart(kind, title, width, height, left, top, right, bottom, x_label, y_label, ticks,
                 y.ticks(percent=percent), tuple(shapes), slanted=True)


def lines(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float | None]], *, x_label: str,
          y_label: str, kind: str = "lines", reference: float | None = None, reference_label: str = "reference",
          band: tuple[Sequence[float | None], Sequence[float | None]] | None = None, band_label: str = "interval",
          shares: Sequence[float | None] | None = None, shares_label: str = "share",
          status: Sequence[str | None] | None = None, y_range: tuple[float, float] | None = None,
          from_zero: bool = True, width: int = 900, height: int = 300) -> Chart:
    """Lines over categories (runs, windows); optionally a dashed reference, a shaded band (an
    interval around the first series), 0-1 ``shares`` as bars against a right axis, and points of
    the first series coloured by ``status``. The value axis starts at 0 for values that are not
    negative, unless ``from_zero`` is false."""
    right = 58.0 if shares is not None else 14.0
    left, top, _, bottom = _margins(slanted=categories, right=right)
    seen = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if band is not None:
        seen += [v for side in band for v in side if v is not None and math.isfinite(v)]
    if reference is not None:
        seen.append(reference)
    y = Scale(*(y_range or nice_range(seen, zero=from_zero and min(seen, default=0.0) >= 0)), height - bottom, top)
    centres, ticks = _categories(categories, left, width - right)
    shapes: list[Shape] = []
    y2: Scale | None = None
    if shares is not None:
        y2 = Scale(0.0, 1.0, height - bottom, top)
        step = (width - right - left) / max(len(categories), 1)
        for centre, category, share in zip(centres, categories, shares, strict=True):
            if share is not None:
                shapes.append(Shape("rect", {"class": "share", "x": round(centre - step * 0.35, 1),
                                             "y": y2(min(share, 1.0)), "width": round(step * 0.7, 1),
                                             "height": round(y2(0.0) - y2(min(share, 1.0)), 1),
                                             "fill": MUTED["coverage"], "data-x": category, "data-y": share},
                                    title=f"{category}: {shares_label} {share:.0%}"))
    if band is not None:
        for run in _runs([(c, lo, hi) for c, lo, hi in zip(centres, *band, strict=True)]):
            outline = [f"{c},{y(lo)}" for c, lo, _ in run] + [f"{c},{y(hi)}" for c, _, hi in reversed(run)]
            shapes.append(Shape("polygon", {"class": "band", "points": " ".join(outline), "fill": MUTED["band"],
                                            "fill-opacity": 0.7}, title=band_label))
    if reference is not None:
        shapes.append(Shape("line", {"class": "reference", "x1": left, "x2": width - right, "y1": y(reference),
                                     "y2": y(reference), "stroke": MUTED["reference"], "stroke-dasharray": "5,4",
                                     "data-y": reference}, title=f"{reference_label} {number(reference)}"))
    for j, ((name, values), color) in enumerate(zip(series.items(), PALETTE, strict=False)):
        points = [(c, label, v, (status or [])[i] if j == 0 and status else None)
                  for i, (c, label, v) in enumerate(zip(centres, categories, values, strict=True))
                  if v is not None and math.isfinite(v)]
        if len(points) > 1:
            shapes.append(Shape("polyline", {"class": "line", "fill": "none", "stroke": color, "stroke-width": 2,
                                             "data-series": name,
                                             "points": " ".join(f"{c},{y(v)}" for c, _, v, _ in points)}, title=name))
        for c, label, v, verdict in points:
            fill = STATUS_COLORS.get(verdict or "", color)
            shapes.append(Shape("circle", {"class": "point", "cx": c, "cy": y(v), "r": 3, "fill": fill,
                                           "data-series": name, "data-x": label, "data-y": v},
                                title=f"{label}: {name} {number(v)}" + (f" ({verdict})" if verdict else "")))
    names = list(series) + ([band_label] if band else []) + ([reference_label] if reference is not None else [])
    colors = list(PALETTE[:len(series)]) + ([MUTED["band"]] if band else []) + (
        [MUTED["reference"]] if reference is not None else [])
    if shares is not None:
        names, colors = [*names, shares_label], [*colors, MUTED["coverage"]]
    shapes += _legend(names, colors, width)
    return Chart(kind, title, width, height, left, top, right, bottom, x_label, y_label, ticks, y.ticks(),
                 tuple(shapes), slanted=True, y2_label=shares_label if y2 else None,
                 y2_ticks=y2.ticks(percent=True) if y2 else ())


def _runs(points: Sequence[tuple[float, float | None, float | None]]) -> list[list[tuple[float, float, float]]]:
    """Stretches of consecutive points where both bounds are known."""
    out: list[list[tuple[float, float, float]]] = [[]]
    for c, lo, hi in points:
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            out.append([])
        else:
            out[-1].append((c, lo, hi))
    return [run for run in out if run]


@dataclass(frozen=True)
class Point:
    """A point of an x-y chart; ``n``: how many observations it stands for, where it matters."""

    x: float
    y: float
    n: int | None = None


def xy(title: str, series: Mapping[str, Sequence[Point]], *, x_label: str, y_label: str, kind: str = "xy",
       x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
       diagonal: bool = False, zero: bool = False, connect: bool = False, width: int = 440,
       height: int = 360) -> Chart:
    """Points against two numeric axes; optionally the diagonal y = x, the line y = 0, and the
    points of each series joined."""
    left, top, right, bottom = _margins()
    xs = [p.x for s in series.values() for p in s]
    ys = [p.y for s in series.values() for p in s]
    if diagonal and not (x_range and y_range):
        x_range = y_range = nice_range(xs + ys)
    x = Scale(*(x_range or nice_range(xs)), left, width - right)
    y = Scale(*(y_range or nice_range(ys, zero=zero)), height - bottom, top)
    shapes: list[Shape] = []
    if diagonal:
        low, high = max(x.low, y.low), min(x.high, y.high)
        shapes.append(Shape("line", {"class": "reference", "x1": x(low), "y1": y(low), "x2": x(high), "y2": y(high),
                                     "stroke": MUTED["reference"], "stroke-dasharray": "5,4"}, title="y = x"))
    if zero and y.low <= 0 <= y.high:
        shapes.append(Shape("line", {"class": "reference", "x1": left, "x2": width - right, "y1": y(0.0),
                                     "y2": y(0.0), "stroke": MUTED["reference"], "stroke-dasharray": "5,4"},
                            title="zero"))
    radius = 3 if sum(len(s) for s in series.values()) <= 200 else 2
    for (name, points), color in zip(series.items(), PALETTE, strict=False):
        if connect and len(points) > 1:
            shapes.append(Shape("polyline", {"class": "line", "fill": "none", "stroke": color, "stroke-width": 1.5,
                                             "data-series": name,
                                             "points": " ".join(f"{x(p.x)},{y(p.y)}" for p in points)}, title=name))
        for p in points:
            attrs: dict[str, Any] = {"class": "point", "cx": x(p.x), "cy": y(p.y), "r": radius, "fill": color,
                                     "fill-opacity": 0.8 if connect else 0.45, "data-series": name,
                                     "data-x": p.x, "data-y": p.y}
            tip = f"{name}: {x_label} {number(p.x)}, {y_label} {number(p.y)}"
            if p.n is not None:
                attrs["data-n"] = p.n
                tip += f" ({p.n} labels)"
            shapes.append(Shape("circle", attrs, title=tip))
    if len(series) > 1:
        shapes += _legend(list(series), PALETTE[:len(series)], width)
    return Chart(kind, title, width, height, left, top, right, bottom, x_label, y_label, x.ticks(), y.ticks(),
                 tuple(shapes))


def heatmap(title: str, rows: Sequence[str], columns: Sequence[str], counts: Sequence[Sequence[float]], *,
            x_label: str, y_label: str, kind: str = "heatmap", cell: int = 46) -> Chart:
    """A grid of counts, each cell shaded by its share of its row, with the count written in it."""
    left, top = 92.0, 40.0
    right, bottom = 14.0, 52.0
    width = max(int(left + right + cell * max(len(columns), 1)) + 40, 260)
    height = int(top + bottom + cell * max(len(rows), 1))
    shapes: list[Shape] = []
    for i, (row, line) in enumerate(zip(rows, counts, strict=True)):
        total = sum(line)
        for j, (column, count) in enumerate(zip(columns, line, strict=True)):
            share = count / total if total else 0.0
            x0, y0 = left + j * cell, top + i * cell
            shapes.append(Shape("rect", {"class": "cell", "x": x0, "y": y0, "width": cell, "height": cell,
                                         "fill": MUTED["cell"], "fill-opacity": round(0.08 + 0.85 * share, 3),
                                         "stroke": "#fff", "data-row": row, "data-column": column,
                                         "data-count": int(count)},
                                title=f"{y_label} {row}, {x_label} {column}: {int(count)} ({share:.0%} of the row)"))
            shapes.append(Shape("text", {"class": "count", "x": x0 + cell / 2, "y": y0 + cell / 2 + 4,
                                         "text-anchor": "middle", "font-size": 11,
                                         "fill": "#fff" if share > 0.5 else "#222"},
                                text=f"{int(count):,}"))
    x_ticks = tuple(Tick(left + (j + 0.5) * cell, str(c)[:10]) for j, c in enumerate(columns))
    y_ticks = tuple(Tick(top + (i + 0.5) * cell, str(r)[:12]) for i, r in enumerate(rows))
    return Chart(kind, title, width, height, left, top, float(width - left - cell * len(columns)), bottom,
                 x_label, y_label, x_ticks, y_ticks, tuple(shapes))
