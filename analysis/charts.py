"""Report charts as inline SVG (matplotlib), byte-identical for identical data."""

from __future__ import annotations

import functools
import io
from datetime import datetime
from typing import Any


@functools.cache
def _pyplot() -> Any:
    """matplotlib's pyplot, set up for reports. Imported on the first chart, not with the
    module: it takes 0.3 s, and every command imports this module through the CLI."""
    import matplotlib

    matplotlib.use("Agg")  # no display: reports are made on servers and in cron jobs
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "fleetlog"  # stable element ids: same data, same bytes
    plt.rcParams["svg.fonttype"] = "none"  # text stays text (smaller, searchable)
    return plt


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inlined in HTML


def incidents_over_time(trend: list[dict[str, Any]], by_category: list[dict[str, Any]],
                        title: str) -> str:
    fig, (left, right) = _pyplot().subplots(1, 2, figsize=(10, 3.2),
                                      gridspec_kw={"width_ratios": [3, 2]})
    buckets = [row["bucket"] for row in trend]
    left.bar([_label(b) for b in buckets], [row["incidents"] for row in trend],
             color="#c0392b")
    left.set_title(f"Incidents per {title}")
    left.tick_params(axis="x", labelrotation=60, labelsize=7)
    if len(buckets) > 24:
        for index, label in enumerate(left.get_xticklabels()):
            label.set_visible(index % max(1, len(buckets) // 24) == 0)
    cats = [row["category"] for row in by_category] or ["none"]
    counts = [row["incidents"] for row in by_category] or [0]
    right.barh(cats[::-1], counts[::-1], color="#2c3e50")
    right.set_title("Incidents by category")
    right.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return _svg(fig)


def rack_heatmap(rack_errors: list[dict[str, Any]], trend: list[dict[str, Any]]) -> str:
    racks = sorted({row["rack"] for row in rack_errors})
    buckets = [row["bucket"] for row in trend]
    index = {b: i for i, b in enumerate(buckets)}
    grid = [[0] * len(buckets) for _ in racks]
    for row in rack_errors:
        if row["bucket"] in index:
            grid[racks.index(row["rack"])][index[row["bucket"]]] = row["errors"]
    fig, ax = _pyplot().subplots(figsize=(10, max(1.6, 0.22 * len(racks) + 1)))
    if racks:
        image = ax.imshow(grid, aspect="auto", cmap="OrRd", interpolation="nearest")
        ax.set_yticks(range(len(racks)), racks, fontsize=7)
        step = max(1, len(buckets) // 24)
        ax.set_xticks(range(0, len(buckets), step),
                      [_label(b) for b in buckets[::step]], rotation=60, fontsize=7)
        fig.colorbar(image, ax=ax, label="errors")
    else:
        ax.text(0.5, 0.5, "no XIDs or node-level incidents in this window", ha="center",
                va="center")
        ax.set_axis_off()
    ax.set_title("Errors by rack (XIDs + incidents)")
    fig.tight_layout()
    return _svg(fig)


def _label(value: Any) -> str:
    return value.strftime("%m-%d %H:%M") if isinstance(value, datetime) else str(value)
