"""Small vectorised helpers over one entity's time series (numpy arrays, time in microseconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
