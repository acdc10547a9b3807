"""One file's genre over time as a PNG, from the record ``predict.py --segments`` prints for it.

The picture: a heat map of classes (rows, the most probable overall on top) by time (each segment
over its own start..end), a strip above it in one colour per segment's winner, so the genre changes
read at a glance, and beside it a bar chart of the whole file's top classes. A ``--tags`` record
(``"tag"`` items) shows the tags that reach some top list, at most ``MAX_TAG_ROWS`` of them; a silent
file's record, a figure that says so.
"""

from pathlib import PureWindowsPath
from typing import NamedTuple

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Patch
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FuncFormatter, MultipleLocator

from .figures import class_colors, save_figure

MAX_TAG_ROWS = 15
WIDTH_IN = 12.0  # wide enough for a 2-hour mix's ticks, narrow enough for a page
ROW_IN = 0.3  # inches per heat-map row: a 9-pt label with air around it
HEATMAP = "viridis"  # perceptually uniform: equal steps in probability look equal
OTHER_COLOR = (0.72, 0.72, 0.72, 1.0)  # a winner without a row of its own (tags beyond MAX_TAG_ROWS)
# Tags' colours: tab20's dark shades, then its light ones, without its two greys (the "other" colour)
TAG_COLORS = [colormaps["tab20"](i) for i in [*range(0, 20, 2), *range(1, 20, 2)] if i not in (14, 15)]
FONT_PT = 9
LEGEND_IN = 7.0  # the strip's legend stays this wide: the strip is ~8 in wide at WIDTH_IN, less its label
# Time-axis tick spacings in seconds: the smallest that gives at most MAX_TICKS ticks is used, so a
# 30-s clip is ticked every 5 s and a 3-hour mix every 20 min.
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)
MAX_TICKS = 10


def draw(record: dict, path, classes=None) -> None:
    """Write a timeline PNG of one file's genre over time to ``path`` (atomically:
    ``features.files.atomic_write``).

    Parameters
    ----------
    record : dict
        A file's record from ``predict.py --segments`` (genres or ``--tags``). A silent file's record
        gives a figure that says so.
    path : str or Path
        Where the PNG goes; its folder is created.
    classes : list of str, optional
        The model's classes, giving every genre a row and a colour that is the same in every file's
        picture; without it, the rows are the classes the record names.

    Raises
    ------
    ValueError
        The record is of a file that failed, or has no segments.
    """
    if "error" in record:
        raise ValueError(f"no timeline of a file that failed: {record['error']}")
    if record.get("silent"):
        save_figure(_silent_figure(record), path)
        return
    if not record.get("segments"):
        raise ValueError("no segments: run predict.py with --segments")
    save_figure(_timeline_figure(record, classes), path)


def clock(seconds: float, hours: bool = False) -> str:
    """``m:ss``, or ``h:mm:ss`` with ``hours`` (an axis that passes an hour writes every tick so)."""
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


def _keys(record: dict) -> tuple:
    """(item key, value key) of the record's top entries: ``genre`` or ``tag``; ``probability`` or
    ``score`` (an SVM's decision scores)."""
    first = (record.get("top") or record["segments"][0]["top"])[0]
    item = "tag" if "tag" in first else "genre"
    return item, "score" if "score" in first else "probability"


def _name(record: dict) -> str:
    # The basename of a POSIX or a Windows path: PureWindowsPath splits at both separators.
    return PureWindowsPath(record.get("file", "")).name or "?"


class Rows(NamedTuple):
    """The heat map's rows, most probable first, and what they were chosen from."""

    names: list
    colors: list  # each row's colour in the strip and the bars
    n_classes: int  # the model's classes; None when unknown (no ``classes``)
    n_named: int  # the classes the record names


def _rows(record: dict, item: str, value: str, classes) -> Rows:
    """The rows: every genre, or the most probable tags the record names (at most MAX_TAG_ROWS).

    A genre keeps the colour of its place in ``classes`` (the same in every picture); tags, a few of
    fifty, take the distinct colours in their row order.
    """
    named = dict.fromkeys(e[item] for e in record.get("top", []))  # a dict: ordered, no repeats
    for segment in record["segments"]:
        named.update(dict.fromkeys(e[item] for e in segment["top"]))
    named = list(named)
    universe = list(classes or [])
    universe += sorted(set(named) - set(universe))
    shown = named if item == "tag" else universe
    overall = {e[item]: e[value] for e in record.get("top", [])}
    mean = _time_mean(record, item, value)
    rows = sorted(shown, key=lambda c: (-overall.get(c, -np.inf), -mean.get(c, -np.inf)))
    n_classes = len(universe) if classes else None
    if item == "tag":
        rows = rows[:MAX_TAG_ROWS]
        return Rows(rows, TAG_COLORS[:len(rows)], n_classes, len(named))
    palette = class_colors(len(universe))
    return Rows(rows, [palette[universe.index(c)] for c in rows], n_classes, len(named))


def _time_mean(record: dict, item: str, value: str) -> dict:
    """Each class's mean over the segments, weighted by length, a class a segment leaves out as 0:
    the order of the rows the record's top does not rank."""
    total, sums = 0.0, {}
    for segment in record["segments"]:
        length = segment["end_s"] - segment["start_s"]
        total += length
        for e in segment["top"]:
            sums[e[item]] = sums.get(e[item], 0.0) + length * e[value]
    return {c: s / (total or 1.0) for c, s in sums.items()}


def _segment_values(segments: list, rows: list, item: str, value: str) -> tuple:
    """(values (n_segments, n_rows), winner row per segment, -1 where it has none). A class a segment
    does not list is 0 for probabilities and NaN (blank) for scores, which have no floor."""
    index = {c: i for i, c in enumerate(rows)}
    values = np.full((len(segments), len(rows)), 0.0 if value == "probability" else np.nan)
    winners = np.full(len(segments), -1)
    for k, segment in enumerate(segments):
        for e in segment["top"]:
            if e[item] in index:
                values[k, index[e[item]]] = e[value]
        winners[k] = index.get(segment["top"][0][item], -1) if segment["top"] else -1
    return values, winners


def _columns(starts: np.ndarray, ends: np.ndarray) -> tuple:
    """(edges, owner): the time axis cut at every segment boundary, and the segment seen in each piece
    (-1 in a gap). Segments are laid down in time order, a later one over an earlier where they
    overlap (the last windows of some models), so the picture is exact at any length."""
    edges = np.unique(np.concatenate([starts, ends]))
    owner = np.full(max(len(edges) - 1, 0), -1)
    first, last = np.searchsorted(edges, starts), np.searchsorted(edges, ends)
    for k in np.argsort(starts, kind="stable"):
        owner[first[k]:last[k]] = k
    return edges, owner


def _timeline_figure(record: dict, classes) -> Figure:
    item, value = _keys(record)
    segments = record["segments"]
    rows = _rows(record, item, value, classes)
    values, winners = _segment_values(segments, rows.names, item, value)
    starts = np.array([s["start_s"] for s in segments], float)
    ends = np.array([s["end_s"] for s in segments], float)
    edges, owner = _columns(starts, ends)
    end = max(float(record.get("duration_s") or 0.0), float(ends.max()))

    n = len(rows.names)
    fig = Figure(figsize=(WIDTH_IN, 2.3 + ROW_IN * n), layout="constrained")
    axes = fig.subplot_mosaic([["strip", ".", "."], ["heat", "bar", "top"]],
                              height_ratios=[0.32, ROW_IN * n], width_ratios=[10, 0.18, 2.3])
    axes["heat"].sharex(axes["strip"])
    _strip(axes["strip"], edges, np.where(owner >= 0, winners[owner], -2), rows, item)
    _heat(fig, axes["heat"], axes["bar"], edges, owner, values, rows.names, value)
    _time_axis(axes["heat"], end)
    axes["heat"].set_xlabel(_note(segments, rows, item, value, end), fontsize=FONT_PT - 0.5)
    _top_bars(axes["top"], record, item, value, rows)
    fig.suptitle(_title(record, item, starts, ends, end), fontsize=FONT_PT + 1.5)
    return fig


def _strip(ax, edges, winner, rows: Rows, item: str):
    """Each piece of time in its winner's colour (-1: a winner without a row, -2: a gap, left blank);
    the legend of the winners above it, in row order."""
    n = len(rows.names)
    cmap = ListedColormap([*rows.colors, OTHER_COLOR])
    shown = np.ma.masked_less(np.where(winner == -1, n, winner), 0)
    ax.pcolormesh(edges, [0, 1], shown[None, :], cmap=cmap, vmin=-0.5, vmax=n + 0.5)
    ax.set_yticks([0.5], [f"top {item}"], fontsize=FONT_PT)
    ax.tick_params(axis="x", labelbottom=False, length=0)
    ax.tick_params(axis="y", length=0)
    handles = [Patch(color=rows.colors[i], label=rows.names[i]) for i in range(n) if (winner == i).any()]
    handles += [Patch(color=OTHER_COLOR, label=f"other {item}")] if (winner == -1).any() else []
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=_legend_columns(handles),
              frameon=False, fontsize=FONT_PT, handlelength=1.6, columnspacing=1.4, borderaxespad=0.3)


def _legend_columns(handles) -> int:
    """The most columns that keep the legend within LEGEND_IN: a legend wider than the strip would
    push the heat map's colour bar away from it (constrained layout widens the whole column)."""
    font = FontProperties(size=FONT_PT)
    text = [TextToPath().get_text_width_height_descent(h.get_label(), font, ismath=False)[0] / 72
            for h in handles]
    entry, spacing = (1.6 + 0.8) * FONT_PT / 72, 1.4 * FONT_PT / 72  # handle and its gap; column gap
    for ncol in range(len(handles), 1, -1):
        # the legend fills columns as np.array_split does
        width = sum(max(c) + entry for c in np.array_split(text, ncol)) + spacing * (ncol - 1)
        if width <= LEGEND_IN:
            return ncol
    return 1


def _heat(fig, ax, bar_ax, edges, owner, values, names, value):
    """Rows x time in the colour of each segment's value; its colour bar in ``bar_ax``."""
    grid = np.full((len(names), len(owner)), np.nan)
    grid[:, owner >= 0] = values[owner[owner >= 0]].T
    limits = (0.0, 1.0) if value == "probability" else (float(np.nanmin(values)), float(np.nanmax(values)))
    mesh = ax.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_invalid(grid), cmap=colormaps[HEATMAP],
                         vmin=limits[0], vmax=limits[1])
    ax.set_ylim(len(names), 0)
    ax.set_yticks(np.arange(len(names)) + 0.5, names, fontsize=FONT_PT)
    ax.tick_params(axis="y", length=0)
    # thin white rules between the rows, so a long mix does not read as one smear
    ax.hlines(np.arange(1, len(names)), edges[0], edges[-1], colors="white", linewidth=0.6)
    fig.colorbar(mesh, cax=bar_ax).set_label(value, fontsize=FONT_PT)
    bar_ax.tick_params(labelsize=FONT_PT - 1)


def _time_axis(ax, end: float):
    """0..end in m:ss (h:mm:ss past an hour), ticked at a round step giving at most MAX_TICKS ticks."""
    step = next((s for s in TICK_STEPS if end / s <= MAX_TICKS), TICK_STEPS[-1])
    hours = end >= 3600
    ax.set_xlim(0, end)
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x, hours)))
    ax.tick_params(axis="x", labelsize=FONT_PT)


def _note(segments, rows: Rows, item, value, end) -> str:
    """The time axis's label, saying what the picture leaves out: the classes a segment does not
    list, the tags without a row."""
    k = max(len(s["top"]) for s in segments)
    parts = [f"time ({'h:mm:ss' if end >= 3600 else 'm:ss'})"]
    if k < (rows.n_classes or rows.n_named):
        missing = "drawn as 0" if value == "probability" else "left blank"
        of = f" of {rows.n_classes} {item}s" if rows.n_classes else ""
        parts.append(f"segments show their top {k}{of}; the rest are {missing}")
    if len(rows.names) < rows.n_named:
        parts.append(f"rows: the {len(rows.names)} most probable of the {rows.n_named} {item}s listed")
    return "  ·  ".join(parts)


def _top_bars(ax, record, item, value, rows: Rows):
    """The whole file's top classes as horizontal bars, each beside its heat-map row (the rows are
    sorted by the same probabilities, so the top classes are the first rows)."""
    place = {name: i for i, name in enumerate(rows.names)}
    top = [e for e in record.get("top", []) if e[item] in place]
    y = [place[e[item]] + 0.5 for e in top]
    ax.barh(y, [e[value] for e in top], height=0.65, color=[rows.colors[place[e[item]]] for e in top])
    ax.set_ylim(len(rows.names), 0)
    ax.set_yticks(y, [e[item] for e in top], fontsize=FONT_PT)
    ax.tick_params(axis="y", length=0)
    ax.tick_params(axis="x", labelsize=FONT_PT - 1)
    if value == "probability":
        ax.set_xlim(0, 1)
    for yi, e in zip(y, top):
        ax.text(e[value], yi, f" {e[value]:.2f}", va="center", fontsize=FONT_PT - 1)
    ax.set_title("whole file", fontsize=FONT_PT)
    ax.spines[["top", "right"]].set_visible(False)


def _title(record, item, starts, ends, end) -> str:
    """File name; then model, length, segment length and the whole file's verdict."""
    length = float(np.median(ends - starts))
    verdict = f"genre: {record['genre']}" if record.get("genre") else f"top {item}: {record['top'][0][item]}"
    details = [record.get("model", "unknown model"), clock(end, end >= 3600),
               f"{len(starts)} segments of {length:.3g} s", verdict]
    return f"{_name(record)}\n" + "   ·   ".join(details)


def _silent_figure(record: dict) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, 2.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    peak = record.get("peak_dbfs")
    level = "no sound at all" if peak is None else f"peak {peak:g} dBFS"
    what = "genre" if "genre" in record else "tags"
    ax.text(0.5, 0.5, f"silent ({level}): no {what}", ha="center", va="center", fontsize=16, color="0.35",
            transform=ax.transAxes)
    details = [record.get("model", "unknown model")]
    if record.get("duration_s") is not None:
        details.append(clock(record["duration_s"], record["duration_s"] >= 3600))
    fig.suptitle(f"{_name(record)}\n" + "   ·   ".join(details), fontsize=FONT_PT + 1.5)
    return fig
