"""The small interface a scheduler backend implements, and what it reports back.

A backend knows how to run six operations on its scheduler and how to read a node's and a job's
state, nothing else: the safety policy (dry run, budget, circuit breaker, never touching a node
someone else drained, idempotence, verification) is ``act.actor``'s and the same for every
backend. ``plan_*`` returns the exact command lines an operation would run (what a dry run
prints and what an event records); ``run`` runs them. Slurm is ``act.slurm``; a Kubernetes
backend (cordon and drain a node, delete a job's pods) would be one more module implementing
this protocol (docs/act.md#adding-a-backend).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleetlog.ingest.contract.errors import FleetlogError

Command = tuple[str, ...]  # one command as its argument list: never run through a shell


class BackendError(FleetlogError):
    """The scheduler cannot be reached or its tools are missing: nothing can be done now."""


class CommandFailed(FleetlogError):
    """The scheduler refused one command (exit code and its error text)."""


def show(commands: Sequence[Command]) -> str:
    """The command lines as people would type them, "; "-joined."""
    return "; ".join(shlex.join(command) for command in commands)


@dataclass(frozen=True)
class NodeState:
    """A node as the scheduler sees it. ``drained``: drained or draining (no new work)."""

    name: str
    state: str  # the scheduler's word, e.g. "idle", "allocated", "drained", "draining", "down*"
    drained: bool
    reason: str = ""  # why it was drained or downed, as the scheduler keeps it


@dataclass(frozen=True)
class JobState:
    job: str
    state: str  # e.g. "RUNNING", "PENDING", "COMPLETED"
    partition: str = ""
    nodes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = field(default=())  # nodes it must not run on


class Backend(Protocol):
    """A scheduler, as ``act.actor`` drives it (see the module docstring)."""

    name: str

    def node_state(self, node: str) -> NodeState | None: ...  # None: no such node

    def node_count(self) -> int: ...

    def job_state(self, job: str) -> JobState | None: ...  # None: no such job (any more)

    def plan_drain(self, node: str, reason: str) -> list[Command]: ...

    def plan_resume(self, node: str) -> list[Command]: ...

    def plan_requeue_without(self, job: str, nodes: Sequence[str]) -> list[Command]: ...

    def plan_signal_job(self, job: str, signal: str) -> list[Command]: ...

    def plan_move_partition(self, job: str, partition: str) -> list[Command]: ...

    def run(self, commands: Sequence[Command]) -> None: ...  # raises CommandFailed
