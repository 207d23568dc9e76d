"""Checkpoint-interval math: Young's and Daly's optimum, and the work a failure costs.

Young (1974): T = sqrt(2 δ M). Daly (2006), for δ < 2M:
T = sqrt(2 δ M) · [1 + ⅓·sqrt(δ / 2M) + (1/9)·(δ / 2M)] − δ, else T = M;
δ is the time to write a checkpoint and M the mean time between failures of the job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def young_interval(checkpoint_s: float, mtbf_s: float) -> float:
    _check(checkpoint_s, mtbf_s)
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum compute time between checkpoints, in seconds."""
    _check(checkpoint_s, mtbf_s)
    if checkpoint_s >= 2.0 * mtbf_s:
        return mtbf_s
    ratio = checkpoint_s / (2.0 * mtbf_s)
    return (
        math.sqrt(2.0 * checkpoint_s * mtbf_s)
        * (1.0 + math.sqrt(ratio) / 3.0 + ratio / 9.0)
        - checkpoint_s
    )


GPUS_PER_NODE = 8


def node_count(gpus: int) -> int:
    """Nodes a job of ``gpus`` GPUs spans (at least one)."""
    return max(1, gpus // GPUS_PER_NODE)


def node_mtbf_s(jobs: Iterable[tuple[float, int]], failures: int) -> float:
    """Node-seconds run per failure over jobs given as (wall seconds, GPUs); inf when nothing
    failed. The replay (``analysis.whatif``) and the recommended interval
    (``analysis.job_actions``) measure the fleet's MTBF this one way."""
    node_seconds = sum(wall_s * node_count(gpus) for wall_s, gpus in jobs)
    return node_seconds / failures if failures else float("inf")


def job_mtbf_s(node_mtbf_s: float, nodes: int) -> float:
    """Failures of independent nodes add up: a job on N nodes fails N times as often."""
    if nodes <= 0:
        raise ValueError("a job needs at least one node")
    return node_mtbf_s / nodes


def expected_loss_fraction(interval_s: float, checkpoint_s: float, restart_s: float,
                           mtbf_s: float) -> float:
    """First-order share of wall time lost to checkpoints, rework and restarts."""
    _check(checkpoint_s, mtbf_s)
    if interval_s <= 0:
        raise ValueError("the checkpoint interval must be positive")
    overhead = checkpoint_s / (interval_s + checkpoint_s)
    rework = ((interval_s + checkpoint_s) / 2.0 + restart_s) / mtbf_s
    return min(1.0, overhead + rework)


def lead_covers_checkpoint(lead_s: float, checkpoint_s: float) -> bool:
    """A warning ``lead_s`` ahead leaves time for a checkpoint-now to complete first: the
    failure then costs that checkpoint, not the work since the last periodic one. The replay
    (``analysis.whatif``) and the recommended interval (``analysis.job_actions``) use this one
    rule."""
    return lead_s > checkpoint_s


def _check(checkpoint_s: float, mtbf_s: float) -> None:
    if checkpoint_s <= 0 or mtbf_s <= 0:
        raise ValueError("checkpoint time and MTBF must be positive")
