"""The safety policy between a recommendation and a scheduler: what ``fleetlog act`` does.

For each recommendation, in order (docs/act.md#the-safety-rules):

1. **Idempotent.** Its action has an id from the recommendation's id and the action
   (``action_id``); an action with an attempt in the store (executed, skipped or failed) is
   never attempted again, so ``act`` run twice, or restarted after a crash, repeats nothing.
2. **Mapped, or skipped with why.** fleetlog's action becomes one backend operation
   (``OPERATIONS``): drain a node, requeue a job without its suspect nodes, signal it to
   checkpoint, move it to another partition. One the scheduler cannot carry out (reset a GPU,
   replace a cable) is ``action.skipped`` saying who must.
3. **Never someone else's drain.** A node drained (or downed) with a reason that does not start
   with ``fleetlog `` is left alone: not drained again, never resumed.
4. **Budget.** At most ``max_per_target`` actions on one node or job within ``budget_window_s``.
5. **Circuit breaker.** Drains stop once ``max_drain_share`` of the scheduler's nodes were
   drained by fleetlog within ``breaker_window_s`` (the remediation config's
   ``[circuit_breaker]``; at least one node is always allowed); beyond it, a human decides.
6. **Dry run by default.** Without ``execute`` the commands are only shown; nothing changes,
   nothing is landed.
7. **Verified.** After running the commands the node's or job's state is read again (a bounded
   poll); an action that did not take is ``action.executed`` with ``verified=false`` and is
   escalated (``escalate`` in the outcome).

Every attempt is an event (``action.executed``, ``action.skipped``, ``action.failed``) handed to
the one ``Sink`` as soon as it is made.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from fleetlog.act.backend import Backend, Command, CommandFailed, JobState, NodeState, show
from fleetlog.act.source import Attempt, Recommendation
from fleetlog.analysis.config_file import load_config
from fleetlog.analysis.remediation import RemediationConfig
from fleetlog.ingest import contract as c

REASON_PREFIX: Final = "fleetlog "  # every drain reason fleetlog writes starts with it
SOURCE: Final = "fleetlog-act"

# fleetlog action -> backend operation. The rest have none (``NO_OPERATION`` says who acts).
OPERATIONS: Final = {
    "drain_node": "drain", "reboot_node": "drain", "rma": "drain",
    "restart_from_checkpoint": "requeue_without", "swap_node": "requeue_without",
    "restart_app": "requeue_without",
    "checkpoint_now": "signal_job",
    "migrate_job": "move_partition",
}
NO_OPERATION: Final = {
    "reset_gpu": "needs a human/BMC (nvidia-smi -r on the idle GPU)",
    "replace_cable": "needs a technician", "replace_nic": "needs a technician",
    "replace_switch": "needs a technician", "update_firmware": "needs a maintenance window",
    "check_rack_power": "needs facilities", "check_rack_cooling": "needs facilities",
    "check_storage": "needs the storage team", "report_issue": "needs a human report",
    "set_checkpoint_interval": "the interval is the training script's setting",
    "hold_for_human": "the remediation policy held it for a human",
    "investigate": "no hardware evidence: a human checks what the reason lists first",
    "check_collector": "the telemetry collector is down, not the node: fix the exporter",
    "fix_code": "the job's own code fails: its owner fixes it",
    "fix_and_restart": "restarting as is fails the same way: its owner fixes the code first",
}
_LIVE_JOB: Final = ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "SUSPENDED")
# A job that ended by a failure can be requeued (restarted from its checkpoint); one that
# completed, or that someone cancelled, is left alone.
_RESTARTABLE_JOB: Final = (*_LIVE_JOB, "FAILED", "NODE_FAIL", "BOOT_FAIL", "TIMEOUT",
                           "PREEMPTED", "OUT_OF_MEMORY")


_DEFAULTS: Final = RemediationConfig()  # the budget's and the breaker's defaults are its


@dataclass(frozen=True)
class ActPolicy:
    execute: bool = False
    max_per_target: int = _DEFAULTS.actions.max_per_node
    budget_window_s: float = _DEFAULTS.actions.window_s
    max_drain_share: float = _DEFAULTS.circuit_breaker.max_drain_share
    breaker_window_s: float = _DEFAULTS.circuit_breaker.window_s
    checkpoint_signal: str = "USR1"
    verify_timeout_s: float = 10.0

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> ActPolicy:
        """The breaker from the remediation config's ``[circuit_breaker]``, the budget from its
        ``[actions]`` (``max_per_node``, ``window_s``); defaults without a file. A file that
        does not fit the schema is a ``ConfigError`` naming its line and key."""
        config = RemediationConfig.load(path) if path is not None else _DEFAULTS
        policy = cls(max_per_target=config.actions.max_per_node,
                     budget_window_s=config.actions.window_s,
                     max_drain_share=config.circuit_breaker.max_drain_share,
                     breaker_window_s=config.circuit_breaker.window_s)
        return replace(policy, **overrides)


@dataclass(frozen=True)
class NameMap:
    """fleetlog's names -> the scheduler's: nodes, jobs, and virtual clusters -> partitions.
    A name not in the map is the same in both (the identity default: right for telemetry read
    from the cluster itself; a simulated run needs a map)."""

    # The file's schema too (``analysis.config_file``): a misspelled table is an error, not an
    # empty map. A value may be a number (a Slurm job id written as 4242).
    nodes: dict[str, str | int] = field(default_factory=dict)
    jobs: dict[str, str | int] = field(default_factory=dict)
    partitions: dict[str, str | int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None) -> NameMap:
        """A TOML file with the tables ``[nodes]``, ``[jobs]``, ``[partitions]``, each optional;
        anything else is a ``ConfigError`` naming its line."""
        return cls() if path is None else load_config(path, cls)

    def node(self, name: str) -> str:
        return str(self.nodes.get(name, name))

    def job(self, name: str) -> str:
        return str(self.jobs.get(name, name))

    def partition(self, name: str) -> str:
        return str(self.partitions.get(name, name))


def action_id(recommendation_id: str, action: str) -> str:
    """The same recommendation's action has the same id in every run."""
    digest = hashlib.blake2b(f"{recommendation_id}|{action}".encode(), digest_size=12)
    return f"act-{digest.hexdigest()}"


@dataclass
class Outcome:
    """What became of one recommendation (a row of ``act``'s output)."""

    action_id: str
    recommendation_id: str
    incident_id: str
    action: str
    target: str
    outcome: str  # executed | skipped | failed | planned (dry run) | done_before
    command: str = ""
    verified: bool | None = None
    why: str = ""
    escalate: bool = False


@dataclass(frozen=True)
class _Operation:
    kind: str  # drain | requeue_without | signal_job | move_partition
    key: str  # what the budget counts: "node:<scheduler name>" or "job:<scheduler id>"
    commands: list[Command]
    check: Callable[[], bool]  # does the scheduler's state show it took?


def _node_of(entity: str) -> str | None:
    kind, _, rest = entity.partition(":")
    return rest.split("/", 1)[0] if kind in ("gpu", "nic", "node") and rest else None


def suspect_nodes(rec: Recommendation) -> list[str]:
    """The nodes a job action leaves out: those its reason names after "suspect node(s)" (the
    names are analysis.job_actions', comma-separated), else its incident root's node."""
    match = re.search(r"suspect node\(s\) ([^;]*)", rec.reason)
    names: list[str] = []
    for word in (match.group(1).split(", ") if match else []):
        if not re.fullmatch(r"[\w.\-]+", word):
            break
        names.append(word)
    root = _node_of(rec.root_entity)
    return names or ([root] if root else [])


class Actor:
    """Carries out recommendations through ``backend`` under ``policy`` (module docstring)."""

    def __init__(self, backend: Backend, policy: ActPolicy, names: NameMap | None = None, *,
                 sink: c.Sink | None = None, history: Iterable[Attempt] = (),
                 clock: Callable[[], float] = time.time,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.backend = backend
        self.policy = policy
        self.names = names or NameMap()
        self.sink = sink
        self.clock = clock
        self.on_outcome = on_outcome
        self.done: dict[str, str] = {}  # action id -> its outcome (store and this process)
        self.executed: list[tuple[float, str, str]] = []  # (time s, kind, budget key)
        for attempt in history:
            self._remember(attempt.action_id, attempt.outcome, attempt.time_us / 1e6,
                           attempt.action, attempt.target)

    def _remember(self, aid: str, outcome: str, at_s: float, action: str, target: str) -> None:
        self.done[aid] = outcome
        if outcome in ("executed", "planned"):
            kind = OPERATIONS.get(action, "")
            key = target
            if kind == "drain" and (node := _node_of(target)):
                key = f"node:{self.names.node(node)}"
            elif target.startswith("job:"):
                key = f"job:{self.names.job(target.removeprefix('job:'))}"
            self.executed.append((at_s, kind, key))

    def act(self, recommendations: Sequence[Recommendation]) -> list[Outcome]:
        return [self.act_one(rec) for rec in recommendations]

    def act_one(self, rec: Recommendation) -> Outcome:
        aid = action_id(rec.id, rec.action)
        out = Outcome(aid, rec.id, rec.incident_id, rec.action, rec.target, "")
        if aid in self.done:
            out.outcome, out.why = "done_before", f"already {self.done[aid]}"
            return self._report(out)
        why, op = self._operation(rec)
        if op is None:
            return self._finish(out, rec, "skipped", why=why)
        out.command = show(op.commands)
        refusal = self._refusal(rec, op)
        if refusal:
            return self._finish(out, rec, "skipped", why=refusal)
        if not self.policy.execute:
            return self._finish(out, rec, "planned")
        try:
            self.backend.run(op.commands)
        except CommandFailed as exc:
            return self._finish(out, rec, "failed", why=str(exc))
        out.verified = self._verify(op.check)
        out.escalate = not out.verified
        if not out.verified:
            out.why = "the scheduler's state does not show it: escalate to a human"
        return self._finish(out, rec, "executed")

    def resume(self, node: str) -> Outcome:
        """Return a node fleetlog drained to service, once repaired: only a node drained with
        fleetlog's reason (anyone else's drain is theirs to undo), once per drain (the action id
        comes from the drain's reason, which names the incident)."""
        name = self.names.node(node)
        state = self.backend.node_state(name)
        reason = state.reason if state is not None else ""
        match = re.match(rf"{REASON_PREFIX}(\S+):", reason)
        rec = Recommendation(id=f"resume:{name}:{reason}", incident_id=match.group(1) if match
                             else "", time_us=int(self.clock() * 1e6), target=f"node:{node}",
                             action="resume_node", reason=reason)
        aid = action_id(rec.id, rec.action)
        out = Outcome(aid, rec.id, rec.incident_id, rec.action, rec.target, "")
        if aid in self.done:
            out.outcome, out.why = "done_before", f"already {self.done[aid]}"
            return self._report(out)
        commands = self.backend.plan_resume(name)
        out.command = show(commands)
        if state is None:
            return self._finish(out, rec, "skipped", why=f"no node {name} in {self.backend.name}")
        if not (state.drained or state.state.startswith("down")):
            return self._finish(out, rec, "skipped", why=f"node {name} is {state.state}: "
                                "not drained")
        if match is None:
            return self._finish(out, rec, "skipped", why=(
                f"node {name} is {state.state} with a reason fleetlog did not write "
                f"({reason or 'none'}): left alone"))
        if not self.policy.execute:
            return self._finish(out, rec, "planned")
        try:
            self.backend.run(commands)
        except CommandFailed as exc:
            return self._finish(out, rec, "failed", why=str(exc))

        def resumed() -> bool:
            now = self.backend.node_state(name)
            return now is not None and not now.drained and not now.state.startswith("down")

        out.verified = self._verify(resumed)
        out.escalate = not out.verified
        return self._finish(out, rec, "executed")

    # ---- mapping

    def _operation(self, rec: Recommendation) -> tuple[str, _Operation | None]:
        kind = OPERATIONS.get(rec.action)
        who = self.backend.name
        if kind is None:
            return (f"no {who} operation for {rec.action}: "
                    f"{NO_OPERATION.get(rec.action, 'needs a human')}"), None
        if kind == "drain":
            node = _node_of(rec.target) or _node_of(rec.root_entity)
            if node is None:
                return f"no node to drain for {rec.target}", None
            name = self.names.node(node)
            reason = f"{REASON_PREFIX}{rec.incident_id}: {rec.action} {rec.target}"
            return "", _Operation(kind, f"node:{name}", self.backend.plan_drain(name, reason),
                                  lambda: self._drained_by_us(name))
        if not rec.target.startswith("job:"):
            return f"{rec.action} needs a job target, not {rec.target}", None
        job = self.names.job(rec.target.removeprefix("job:"))
        key = f"job:{job}"
        if kind == "requeue_without":
            nodes = [self.names.node(n) for n in suspect_nodes(rec)]
            return "", _Operation(kind, key, self.backend.plan_requeue_without(job, nodes),
                                  lambda: self._requeued_without(job, nodes))
        if kind == "signal_job":
            return "", _Operation(
                kind, key, self.backend.plan_signal_job(job, self.policy.checkpoint_signal),
                lambda: self._job_is(job, ("RUNNING",)))
        match = re.search(r"migrate it to (\S+) \(", rec.reason)
        if match is None:
            return f"migrate_job: no target cluster in the reason {rec.reason!r}", None
        partition = self.names.partition(match.group(1))
        return "", _Operation(kind, key, self.backend.plan_move_partition(job, partition),
                              lambda: self._in_partition(job, partition))

    # ---- safety

    def _refusal(self, rec: Recommendation, op: _Operation) -> str:
        if rec.after is not None and not self._after_done(rec.after):
            return f"waits for recommendation {rec.after}, which was not carried out"
        if op.kind == "drain":
            name = op.key.removeprefix("node:")
            state = self.backend.node_state(name)
            if state is None:
                return f"no node {name} in {self.backend.name} (check --name-map)"
            if state.drained or state.state.startswith("down"):
                if not state.reason.startswith(REASON_PREFIX):
                    return (f"node {name} is {state.state} with a reason fleetlog did not "
                            f"write ({state.reason or 'none'}): left alone")
                return f"node {name} is already {state.state} by fleetlog ({state.reason})"
        else:
            job = op.key.removeprefix("job:")
            js = self.backend.job_state(job)
            if js is None:
                return f"no job {job} in {self.backend.name} (finished, or check --name-map)"
            states = {"requeue_without": _RESTARTABLE_JOB,
                      "signal_job": ("RUNNING",)}.get(op.kind, _LIVE_JOB)
            if js.state not in states:
                return f"job {job} is {js.state}: nothing to do"
        now = self.clock()
        used = sum(1 for at, _kind, key in self.executed
                   if key == op.key and at >= now - self.policy.budget_window_s)
        if used >= self.policy.max_per_target:
            return (f"budget: {used} action(s) on {op.key} within "
                    f"{self.policy.budget_window_s:.0f} s already "
                    f"(max {self.policy.max_per_target})")
        if op.kind == "drain":
            drained = {key for at, kind, key in self.executed
                       if kind == "drain" and at >= now - self.policy.breaker_window_s}
            fleet = self.backend.node_count()
            allowed = max(1, int(self.policy.max_drain_share * fleet))
            if len(drained) >= allowed:
                return (f"circuit breaker: {len(drained)} of {fleet} nodes drained by fleetlog "
                        f"within {self.policy.breaker_window_s:.0f} s (max share "
                        f"{self.policy.max_drain_share:g}): page a human")
        return ""

    def _after_done(self, after: str) -> bool:
        """Whether any action of the recommendation ``after`` was carried out (or planned)."""
        return any(self.done.get(action_id(after, a)) in ("executed", "planned")
                   for a in OPERATIONS)

    # ---- verification

    def _verify(self, check: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self.policy.verify_timeout_s
        while True:
            if check():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _drained_by_us(self, node: str) -> bool:
        state: NodeState | None = self.backend.node_state(node)
        return state is not None and state.drained and state.reason.startswith(REASON_PREFIX)

    def _requeued_without(self, job: str, nodes: Sequence[str]) -> bool:
        js: JobState | None = self.backend.job_state(job)
        return (js is not None and js.state in _LIVE_JOB and set(nodes) <= set(js.excluded)
                and not set(nodes) & set(js.nodes))

    def _job_is(self, job: str, states: tuple[str, ...]) -> bool:
        js = self.backend.job_state(job)
        return js is not None and js.state in states

    def _in_partition(self, job: str, partition: str) -> bool:
        js = self.backend.job_state(job)
        return js is not None and js.partition == partition

    # ---- recording

    def _finish(self, out: Outcome, rec: Recommendation, outcome: str, why: str = "") -> Outcome:
        out.outcome = outcome
        out.why = why or out.why
        now = self.clock()
        self._remember(out.action_id, outcome, now, rec.action, rec.target)
        if outcome == "planned":
            return self._report(out)
        common = {"action_id": out.action_id, "recommendation_id": rec.id,
                  "incident_id": rec.incident_id, "action": rec.action, "target": rec.target,
                  "backend": self.backend.name, "command": out.command}
        payload: c.Payload
        if outcome == "executed":
            payload = c.ActionExecuted(**common, verified=bool(out.verified))
        elif outcome == "skipped":
            payload = c.ActionSkipped(**common, why=out.why)
        else:
            payload = c.ActionFailed(**common, error=out.why)
        event = c.make_event(payload, time_us=int(now * 1e6), source=SOURCE,
                             id=f"{out.action_id}.{outcome}")
        if self.sink is not None and self.policy.execute:  # a dry run lands nothing
            self.sink.write([event])
        return self._report(out)

    def _report(self, out: Outcome) -> Outcome:
        if self.on_outcome is not None and out.outcome != "done_before":
            self.on_outcome(out)
        return out
