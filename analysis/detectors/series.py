"""Small vectorised helpers over one entity's time series (numpy arrays, time in microseconds;
the CUSUM also as a polars expression over many entities at once)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Episode:
    onset_us: int  # first increment of the run
    detect_us: int  # the sample at which the windowed increase first reached the threshold
    end_us: int  # last increment of the run
    total: float  # increase over the run
    onset_index: int
    detect_index: int


def increments(values: Array) -> Array:
    """Per-sample increase of a counter: NaN and resets (a drop) count as no increase."""
    v = np.asarray(values, dtype=np.float64)
    d = np.diff(v, prepend=v[:1])
    d[~np.isfinite(d)] = 0.0
    d[d < 0] = 0.0
    return d


def rising_episodes(ts: Array, values: Array, window_us: int, threshold: float,
                    min_rises: int = 1) -> list[Episode]:
    """Runs where a counter rose by ``threshold`` or more within ``window_us``, in at least
    ``min_rises`` separate samples of that window (a single jump is a one-off blip, a trend
    rises again and again).

    Causal: ``detect_us`` is the first sample at which the increase over the preceding window
    reached the threshold. A run starts at the first increment that is followed by the next
    within ``window_us`` (chain), and ends at the last increment of that chain.
    """
    d = increments(values)
    idx = np.flatnonzero(d > 0)
    if idx.size == 0:
        return []
    t = ts[idx]
    inc = d[idx]
    csum = np.concatenate([[0.0], np.cumsum(inc)])
    # For each increment j, the first increment inside (t_j - window, t_j].
    first = np.searchsorted(t, t - window_us, side="right")
    windowed = csum[1:] - csum[first]
    rises = np.arange(idx.size) - first + 1
    windowed[rises < min_rises] = 0.0
    episodes: list[Episode] = []
    j = 0
    n = idx.size
    while j < n:
        if windowed[j] < threshold:
            j += 1
            continue
        # Walk back along the chain (gaps <= window) for the onset.
        k = j
        while k > 0 and t[k] - t[k - 1] <= window_us and (not episodes or
                                                          t[k - 1] > episodes[-1].end_us):
            k -= 1
        e = j
        while e + 1 < n and t[e + 1] - t[e] <= window_us:
            e += 1
        episodes.append(Episode(
            onset_us=int(t[k]), detect_us=int(t[j]), end_us=int(t[e]),
            total=float(csum[e + 1] - csum[k]), onset_index=int(idx[k]),
            detect_index=int(idx[j]),
        ))
        j = e + 1
    return episodes


def runs(mask: Array) -> list[tuple[int, int]]:
    """(first, last) index pairs of the runs of True in ``mask``."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return []
    padded = np.concatenate([[False], m, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def cusum_low(frame: pl.DataFrame, name: str, deficit: pl.Expr, sigma: pl.Expr,
              allowance: float, clip: float, over: Sequence[str]) -> pl.DataFrame:
    """``frame`` (sorted by ``over`` then time) with column ``name``: the one-sided CUSUM (Page)
    of a part's shortfall against its reference, in units of its own noise,
    ``S_t = max(0, S_{t-1} + min(d_t, k + clip) - k)`` with ``d_t = deficit / sigma`` and
    ``k = allowance / sigma``, per group ``over``, vectorised (``S = C - min(0, min C)`` of the
    running sum ``C``).

    ``allowance`` is half the smallest shortfall worth finding (a shortfall under it never
    accumulates, however steady), ``clip`` caps what one scrape adds (one wild scrape cannot make
    a trend). A sustained shortfall of ``x`` adds about ``(x - allowance) / sigma`` per scrape:
    a deep one is found in a few scrapes, a shallow one in more, none by a fixed window."""
    k = pl.lit(allowance) / sigma
    step = (pl.min_horizontal(deficit / sigma, k + clip) - k).fill_null(0.0).fill_nan(0.0)
    frame = frame.with_columns(step.cum_sum().over(over).alias(name))
    return frame.with_columns(
        (pl.col(name) - pl.min_horizontal(pl.col(name).cum_min().over(over), pl.lit(0.0)))
        .alias(name))


def cusum_episodes(score: Array, threshold: float) -> list[tuple[int, int, int]]:
    """(onset, fire, end) indices of the runs of ``score > 0`` that reach ``threshold``: the
    onset is the CUSUM's change point (the first scrape after its last zero), the fire the first
    scrape at or above the threshold, the end the last scrape before it fell back to zero."""
    s = np.nan_to_num(np.asarray(score, dtype=np.float64))
    out = []
    for a, b in runs(s > 0):
        above = np.flatnonzero(s[a:b + 1] >= threshold)
        if above.size:
            out.append((a, a + int(above[0]), b))
    return out
