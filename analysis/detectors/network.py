"""InfiniBand port detectors over ``port_samples`` (the switches' view of every cable).

Signals and why (docs/faults.md):
- ``symbol_error`` + ``link_error_recovery`` rising on one port -> a degrading cable or
  transceiver (``port_errors``). A handful of symbol errors is normal, so the rule needs a rise
  well above that within a few minutes, or a trickle that keeps coming over an hour
  (``ERROR_RULES``: rates over a short and a long window), and in either case rises in
  ``MIN_RISES`` separate scrapes: one isolated jump (a blip) is not a degrading part.
- ``rcv_errors`` rising, by the same rules -> bad packets from the far end, typically the
  host's NIC (``rcv_errors``).
- ``link_state`` 1 (Down) -> the port is down (``link_down``, one finding per down period, so a
  flapping cable gives several, and ``link_downed`` counts them too).
Which of cable, NIC or whole leaf it is, is the diagnosis' call (how many ports of the leaf went
down at once, whether the port came back, which counters rose first).

Same two-pass plan as the GPU detectors: the shared grouped scan of every port
(``scans.port_summary``, ``scans.port_buckets``), then the series of the few ports that moved,
only over the stretches where they could fire (``_windows``: on a 2,048-node day, 1,755
candidate ports read whole were 15 M rows; their stretches are 0.35 M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import polars as pl

from fleetlog.analysis.context import US, AnalysisContext, Finding
from fleetlog.analysis.detectors.scans import (
    PORT_BUCKET_S,
    cite,
    flagged_windows,
    keyed_series,
    port_buckets,
    port_summary,
    row_ref,
)
from fleetlog.analysis.detectors.series import Episode, rising_episodes, runs
from fleetlog.ingest import contract as c

ERROR_WINDOW_S: Final = 300
SYMBOL_THRESHOLD: Final = 20.0  # symbol errors + link error recoveries within the window
RCV_THRESHOLD: Final = 20.0
# (window seconds, increase that fires) per counter: the burst a failing part shows within
# minutes, and the trickle (a few an hour, 5-18 a NIC losing packets) a long window sees.
LONG_WINDOW_S: Final = 3600
LONG_THRESHOLD: Final = 5.0
ERROR_RULES: Final = ((ERROR_WINDOW_S, SYMBOL_THRESHOLD), (LONG_WINDOW_S, LONG_THRESHOLD))
MIN_RISES: Final = 3  # separate scrapes within the window: a one-off blip never fires


def _episodes(ts: np.ndarray, values: np.ndarray) -> list[Episode]:
    """The short- and long-window episodes of one counter, the later view of a trend that
    another window already opened dropped."""
    found = sorted((ep for window_s, threshold in ERROR_RULES
                    for ep in rising_episodes(ts, values, window_s * US, threshold,
                                              min_rises=MIN_RISES)),
                   key=lambda e: (e.detect_us, e.onset_us))
    out: list[Episode] = []
    for ep in found:
        if out and ep.onset_us <= out[-1].end_us:
            continue
        out.append(ep)
    return out


def _carried(column: str) -> pl.Expr:
    """A counter's samples (per port and stretch) with the missing ones (null, NaN) carrying
    the last value seen (the first ones the first value seen): a scrape that lacks the counter
    says nothing, so it neither drops it to zero (whose return would read as a rise by the
    whole count) nor hides the rise that arrives with the next value."""
    return (pl.col(column).cast(pl.Float64).fill_nan(None).forward_fill().backward_fill()
            .fill_null(0.0).over("switch", "port", "w"))


def _rises(buckets: pl.DataFrame, names: Sequence[str]) -> pl.Expr:
    """Per bucket of one port (sorted by time), at least the increase of the counters ``names``
    summed: each one's rise within the bucket (``hi - lo``) plus its step up from the last
    bucket's highest value; a NaN (DuckDB's ``max`` keeps one) as unbounded."""
    total = pl.lit(0.0)
    for name in names:
        lo, hi = pl.col(f"{name}_lo"), pl.col(f"{name}_hi")
        step = (lo - hi.shift(1).over("switch", "port")).clip(lower_bound=0).fill_null(0.0)
        total = total + (hi - lo).fill_null(0.0) + step
    return total.fill_nan(float("inf"))


def _windows(ctx: AnalysisContext, candidates: pl.DataFrame) -> pl.DataFrame:
    """The stretches of each candidate port the rules need (``scans.flagged_windows``), from
    the shared 10-minute buckets: every increment of a counter lies in a bucket whose bound
    (``_rises``) is above zero; buckets that rise within ``LONG_WINDOW_S`` (plus a bucket) of
    each other form a chain that holds every chain of increments ``rising_episodes`` follows;
    and a chain can fire only if some hour of it (the 7 buckets an hour can touch) rose by
    ``LONG_THRESHOLD`` (the short rule's threshold is higher). Those chains, from one bucket
    before (the value before the first rise) to two after, and the buckets the link was down
    in, with one bucket each side (so a run that began before the read window still starts
    it, and one that lasts to its end still ends it)."""
    step = PORT_BUCKET_S * US
    keys = ["switch", "port"]
    buckets = (port_buckets(ctx).join(candidates.select(keys), on=keys, how="semi")
               .sort(*keys, "b"))
    flags = []
    for names in (("sym", "ler"), ("rcv",)):
        rose = (buckets.with_columns(_rises(buckets, names).alias("u"))
                .filter(pl.col("u") > 0)
                .with_columns(
                    ((pl.col("b") - pl.col("b").shift(1).over(keys))
                     .fill_null(2**62) > LONG_WINDOW_S * US + step)
                    .cum_sum().over(keys).alias("chain"),
                    pl.col("u").rolling_sum_by("b", f"{(LONG_WINDOW_S + PORT_BUCKET_S) * US}i")
                    .over(keys).alias("hour")))
        live = rose.group_by(*keys, "chain").agg(
            pl.col("hour").max().alias("hour"), pl.col("b").min().alias("first"),
            pl.col("b").max().alias("last")).filter(pl.col("hour") >= LONG_THRESHOLD)
        # Every bucket of a live chain, as b: from one before its first to two after its last.
        flags.append(live.select(*keys, pl.int_ranges(pl.col("first") - step,
                                                      pl.col("last") + 3 * step, step)
                                 .alias("b")).explode("b"))
    down = buckets.filter(pl.col("min_state") <= c.PORT_STATE_DOWN).select(*keys, "b")
    flags.append(down.with_columns(pl.int_ranges(pl.col("b") - step, pl.col("b") + 2 * step,
                                                 step).alias("b")).explode("b"))
    return flagged_windows(ctx, pl.concat(flags, how="vertical_relaxed"), keys, PORT_BUCKET_S,
                           0, 0)


def detect_ports(ctx: AnalysisContext) -> list[Finding]:
    summary = port_summary(ctx)
    candidates = summary.filter(
        (pl.col("sym").fill_null(0) + pl.col("ler").fill_null(0) >= LONG_THRESHOLD)
        | (pl.col("rcv").fill_null(0) >= LONG_THRESHOLD)
        | (pl.col("downed").fill_null(0) >= 1)
        | (pl.col("min_state").fill_null(4) < c.PORT_STATE_ACTIVE)
    )
    if candidates.is_empty():
        return []
    windows = _windows(ctx, candidates)
    if windows.is_empty():
        return []
    data = keyed_series(ctx, "port_samples", windows,
        "s.switch, s.port, epoch_us(s.ts) AS t, s.symbol_error, s.rcv_errors, "
        "s.link_error_recovery, s.link_state",
    ).with_columns(
        (_carried("symbol_error") + _carried("link_error_recovery")).alias("errors"),
        _carried("rcv_errors").alias("rcv"),
    )
    topology = ctx.projections.topology
    findings: list[Finding] = []
    for (switch, port, _w), part in data.group_by(["switch", "port", "w"], maintain_order=True):
        sw, pt = str(switch), int(port)
        link = c.link_entity(sw, pt)
        peer = topology.link_peer(sw, pt) or ""
        node = peer[4:].split("/", 1)[0] if peer.startswith("nic:") else ""
        attrs = {"switch": sw, "port": pt, "peer": peer, "node": node}
        ts = part["t"].to_numpy()
        ids = [row_ref(sw, pt, t) for t in ts.tolist()]
        errors = part["errors"].to_numpy()
        for ep in _episodes(ts, errors):
            findings.append(Finding(
                kind="port_errors", entity=link, onset_us=ep.onset_us, detect_us=ep.detect_us,
                end_us=ep.end_us,
                text=f"symbol errors and link error recoveries rising on {link} "
                f"(+{ep.total:.0f}){' facing ' + peer if peer else ''}",
                evidence=(ids[ep.onset_index], ids[ep.detect_index]), attrs=attrs,
            ))
        rcv = part["rcv"].to_numpy()
        for ep in _episodes(ts, rcv):
            findings.append(Finding(
                kind="rcv_errors", entity=link, onset_us=ep.onset_us, detect_us=ep.detect_us,
                end_us=ep.end_us,
                text=f"receive errors rising on {link} (+{ep.total:.0f})"
                f"{' from ' + peer if peer else ''}",
                evidence=(ids[ep.onset_index], ids[ep.detect_index]), attrs=attrs,
            ))
        state = part["link_state"].to_numpy().astype(np.float64)
        down = np.isfinite(state) & (state <= c.PORT_STATE_DOWN)
        for a, b in runs(down):
            if a == 0:
                continue  # already down when the window opened
            ongoing = b == len(ts) - 1
            findings.append(Finding(
                kind="link_down", entity=link, onset_us=int(ts[a]), detect_us=int(ts[a]),
                end_us=int(ts[b]),
                text=f"{link} went down{' (facing ' + peer + ')' if peer else ''}"
                + (" and stayed down" if ongoing else
                   f" for {(int(ts[b]) - int(ts[a])) / US + ctx.interval_us / US:.0f} s"),
                evidence=(ids[a],), attrs={**attrs, "ongoing": ongoing},
            ))
    return cite(ctx, "port_samples", ("switch", "port"), findings)
