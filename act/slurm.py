"""The Slurm backend: scontrol, scancel, squeue and sinfo, each run with an explicit argument
list (never a shell), against the cluster ``SLURM_CONF`` names (or Slurm's default config).

Operations (docs/act.md#slurm):
- drain: ``scontrol update NodeName=N State=DRAIN Reason="fleetlog <incident>: ..."``;
- resume: ``scontrol update NodeName=N State=RESUME``;
- requeue without nodes: ``scontrol requeuehold J``, ``scontrol update JobId=J ExcNodeList=..``,
  ``scontrol release J``: held while the exclusion is set, so it cannot start on a suspect node
  in between; the job restarts from its last checkpoint (its own script resumes from it);
- signal: ``scancel --signal=USR1 --batch J`` (the training launchers' checkpoint-now convention:
  the batch step's script forwards it to the ranks);
- move to a partition: ``scontrol update JobId=J Partition=P`` (a pending job; a running one is
  requeued held first and released after the move).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Final

from fleetlog.act.backend import BackendError, Command, CommandFailed, JobState, NodeState

TIMEOUT_S: Final = 30.0
# What scontrol and friends say when slurmctld does not answer.
_UNREACHABLE: Final = ("Unable to contact slurm controller", "Socket timed out",
                       "Connection refused", "Zero Bytes were transmitted")


class SlurmBackend:
    """Slurm through its command-line tools (see the module docstring)."""

    name = "slurm"

    def __init__(self, slurm_conf: str | None = None) -> None:
        self.env = dict(os.environ)
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf

    # ---- reading state

    def node_state(self, node: str) -> NodeState | None:
        out = self._read(["sinfo", "--noheader", "--Node", "--nodes", node,
                          "--format", "%N|%T|%E"])
        for line in out.splitlines():
            name, _, rest = line.partition("|")
            if name.strip() != node:
                continue
            state, _, reason = rest.partition("|")
            state = state.strip().lower()
            reason = "" if reason.strip() == "none" else reason.strip()
            return NodeState(node, state, state.startswith(("drain", "drng")), reason)
        return None

    def node_count(self) -> int:
        out = self._read(["sinfo", "--noheader", "--Node", "--format", "%N"])
        return len({line.strip() for line in out.splitlines() if line.strip()})

    def job_state(self, job: str) -> JobState | None:
        try:
            out = self._read(["scontrol", "--oneliner", "show", "job", job])
        except CommandFailed as exc:
            if "Invalid job id" in str(exc):
                return None
            raise
        fields = _fields(out)
        if "JobState" not in fields:
            return None
        return JobState(
            job=job, state=fields["JobState"], partition=fields.get("Partition", ""),
            nodes=self._hostnames(fields.get("NodeList", "")),
            excluded=self._hostnames(fields.get("ExcNodeList", "")))

    def _hostnames(self, hostlist: str) -> tuple[str, ...]:
        if not hostlist or hostlist == "(null)":
            return ()
        return tuple(self._read(["scontrol", "show", "hostnames", hostlist]).split())

    # ---- the operations, as commands

    def plan_drain(self, node: str, reason: str) -> list[Command]:
        return [("scontrol", "update", f"NodeName={node}", "State=DRAIN", f"Reason={reason}")]

    def plan_resume(self, node: str) -> list[Command]:
        return [("scontrol", "update", f"NodeName={node}", "State=RESUME")]

    def plan_requeue_without(self, job: str, nodes: Sequence[str]) -> list[Command]:
        steps: list[Command] = [("scontrol", "requeuehold", job)]
        if nodes:
            steps.append(("scontrol", "update", f"JobId={job}",
                          f"ExcNodeList={','.join(nodes)}"))
        steps.append(("scontrol", "release", job))
        return steps

    def plan_signal_job(self, job: str, signal: str) -> list[Command]:
        return [("scancel", f"--signal={signal.removeprefix('SIG')}", "--batch", job)]

    def plan_move_partition(self, job: str, partition: str) -> list[Command]:
        return [("scontrol", "requeuehold", job),
                ("scontrol", "update", f"JobId={job}", f"Partition={partition}"),
                ("scontrol", "release", job)]

    # ---- running

    def run(self, commands: Sequence[Command]) -> None:
        """Run the commands in order. A job held by a ``requeuehold`` of these commands is
        released again if a later one fails, so a failed step never leaves it held."""
        held: list[str] = []
        for command in commands:
            try:
                self._read(list(command))
            except CommandFailed as exc:
                for job in held:
                    self._read(["scontrol", "release", job])
                note = f" (job {', '.join(held)} released again)" if held else ""
                raise CommandFailed(f"{exc}{note}") from exc
            if command[:2] == ("scontrol", "requeuehold"):
                held.append(command[2])
            elif command[:2] == ("scontrol", "release") and command[2] in held:
                held.remove(command[2])

    def _read(self, argv: list[str]) -> str:
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise BackendError(f"{argv[0]} not found: install Slurm's client tools "
                               "(apt-get install slurm-client) or use a dry run elsewhere")
        try:
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"{argv[0]} did not answer within {TIMEOUT_S:.0f} s: "
                               "is slurmctld up? (check SLURM_CONF)") from exc
        if done.returncode != 0:
            error = " ".join((done.stderr or done.stdout).split()) or f"exit {done.returncode}"
            if any(text in error for text in _UNREACHABLE):
                raise BackendError(f"slurmctld unreachable ({error}): is it running, and does "
                                   "SLURM_CONF name its config?")
            raise CommandFailed(f"{' '.join(argv[:3])}: {error}")
        return done.stdout


def _fields(oneliner: str) -> dict[str, str]:
    """``scontrol --oneliner show job``'s ``Key=Value`` words (values hold no spaces, except
    the last ones such as Command and Comment, which are not read here)."""
    out: dict[str, str] = {}
    for word in oneliner.split():
        key, sep, value = word.partition("=")
        if sep and key not in out:
            out[key] = value
    return out
