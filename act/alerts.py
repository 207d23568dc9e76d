"""Incidents as Alertmanager alerts (its v2 API, ``POST /api/v2/alerts``).

One alert per incident. Its labels say which incident it is and never change over the incident's
life — ``alertname="FleetlogIncident"``, ``incident_id``, ``category``, ``severity`` (of the
stored incident: ``analysis.severity``), ``root``, and ``node`` and ``rack`` where the root sits
on one — because Alertmanager identifies an alert by its label set: sending the same incidents
again updates the alerts it has, never adds one. Annotations carry what a person needs:
``summary``, ``explain`` (the evidence timeline in words, ``analysis.explain``) and
``actions`` (the stored recommendations, the component's first, else the category's advice).

Times: ``startsAt`` is the incident's first symptom. While the incident is open, ``endsAt`` is
``ttl_s`` of wall clock ahead and the alert is re-sent before that (``AlertPusher``: every
``ttl_s / 2``), so it stays active exactly as long as fleetlog keeps saying so and expires by
itself if fleetlog stops; once the incident resolved, ``endsAt`` is its last symptom and
Alertmanager resolves the alert.

Network trouble is never fatal to a follower: ``AlertPusher`` posts from its own thread, says
what failed in one line and retries with backoff, always sending the newest state.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import duckdb

from fleetlog.analysis.context import US
from fleetlog.analysis.diagnosis import Incident
from fleetlog.analysis.explain import WHAT_TO_DO, timeline
from fleetlog.analysis.pipeline import AnalysisResult
from fleetlog.analysis.severity import assess, state
from fleetlog.ingest.contract.errors import FleetlogError

ALERTNAME: Final = "FleetlogIncident"
TTL_S: Final = 300.0  # an open alert's endsAt, ahead of the wall clock (Alertmanager's default
# resolve_timeout): it is re-sent every TTL_S / 2
MAX_TIMELINE: Final = 20  # lines of the explain annotation
TIMEOUT_S: Final = 10.0


class AlertError(FleetlogError):
    """Alertmanager could not be told; the message says what to do."""


@dataclass(frozen=True)
class IncidentAlert:
    labels: dict[str, str]
    annotations: dict[str, str]
    start_us: int
    end_us: int | None  # None while open: endsAt is then ahead of the wall clock

    def payload(self, now: datetime, ttl_s: float = TTL_S) -> dict[str, Any]:
        """The alert as Alertmanager's v2 API takes it, sent at wall clock ``now``."""
        # Open: ttl_s ahead of the wall clock, or of the incident's own start when its event
        # time runs ahead of the wall clock (a replay faster than real time, a skewed clock):
        # Alertmanager refuses a whole post if one alert ends before it starts.
        ends = (_iso_us(self.end_us) if self.end_us is not None
                else _iso_us(int(max(now.timestamp() * US, self.start_us) + ttl_s * US)))
        return {"labels": self.labels, "annotations": self.annotations,
                "startsAt": _iso_us(self.start_us), "endsAt": ends}


def _iso_us(us: int) -> str:
    return (datetime.fromtimestamp(us / US, tz=UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def _place(con: duckdb.DuckDBPyConnection, root: str) -> dict[str, str]:
    """``node`` and ``rack`` labels where the root sits on one."""
    kind, _, rest = root.partition(":")
    if kind == "rack":
        return {"rack": rest}
    if kind not in ("gpu", "nic", "node"):
        return {}
    node = rest.split("/", 1)[0]
    row = con.execute("SELECT rack FROM nodes WHERE node = ?", [node]).fetchone()
    return {"node": node, **({"rack": row[0]} if row and row[0] else {})}


def _actions(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> dict[str, str]:
    """Incident id -> its recommendations in words: the component action(s) first, then the
    job actions counted."""
    rows = con.execute(
        "SELECT incident_id, target, action FROM recommendations WHERE list_contains(?, "
        "incident_id) ORDER BY incident_id, target LIKE 'job:%', action, target",
        [list(ids)]).fetchall()
    component: dict[str, list[str]] = {}
    jobs: dict[str, list[str]] = {}
    for incident_id, target, action in rows:
        if target.startswith("job:"):
            jobs.setdefault(incident_id, []).append(f"{action} {target}")
        else:
            component.setdefault(incident_id, []).append(f"{action} {target}")
    out = {}
    for incident_id in set(component) | set(jobs):
        parts = component.get(incident_id, [])
        job_actions = jobs.get(incident_id, [])
        if job_actions:
            parts.append(f"{len(job_actions)} job action(s): " + "; ".join(job_actions[:10])
                         + (" ..." if len(job_actions) > 10 else ""))
        out[incident_id] = "\n".join(parts)
    return out


def build_alerts(
    con: duckdb.DuckDBPyConnection, incidents: Sequence[Incident], *, as_of_us: int,
    interval_us: int, severities: dict[str, str] | None = None,
) -> list[IncidentAlert]:
    """The alerts for ``incidents`` (analysed: their findings word the explanation), open or
    resolved as of event time ``as_of_us``. Severity is the stored incident's (``severities``
    when the caller has them already)."""
    ids = [i.incident_id for i in incidents]
    known = dict(severities or {})
    missing = [i for i in ids if i not in known]
    assessed = assess(con, missing) if missing else {}
    known.update({i: level for i, (level, _impact) in assessed.items()})
    actions = _actions(con, ids)
    out = []
    for incident in incidents:
        level = known.get(incident.incident_id, "info")
        now = state(incident.end_us, incident.start_us, as_of_us)
        labels = {"alertname": ALERTNAME, "incident_id": incident.incident_id,
                  "category": incident.category, "severity": level, "root": incident.root,
                  **_place(con, incident.root)}
        impact = assessed.get(incident.incident_id)
        impact_text = (f"; {impact[1].jobs_failed} job(s) failed, {impact[1].jobs} touched, "
                       f"{impact[1].gpus} GPUs" if impact else "")
        lines = timeline(incident, interval_us)
        if len(lines) > MAX_TIMELINE:
            lines = [*lines[:MAX_TIMELINE - 1], f"... {len(lines) - MAX_TIMELINE + 1} more"]
        annotations = {
            "summary": (f"{level} {incident.category} on {incident.root}, confidence "
                        f"{incident.confidence:.0%}{impact_text} ({now})"),
            "explain": "\n".join(lines),
            "actions": actions.get(incident.incident_id)
            or WHAT_TO_DO.get(incident.category, "Investigate the evidence."),
        }
        out.append(IncidentAlert(labels, annotations, incident.start_us,
                                 incident.end_us if now == "resolved" else None))
    return out


def post_alerts(url: str, alerts: Sequence[IncidentAlert], *, ttl_s: float = TTL_S,
                now: datetime | None = None) -> int:
    """Post ``alerts`` to the Alertmanager at ``url`` (its base address); returns how many."""
    if not alerts:
        return 0
    now = now or datetime.now(tz=UTC)
    body = json.dumps([a.payload(now, ttl_s) for a in alerts]).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v2/alerts", data=body,
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip().splitlines()[:1]
        raise AlertError(f"Alertmanager at {url} refused the alerts: HTTP {exc.code} "
                         f"{' '.join(detail)[:200]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertError(f"cannot reach Alertmanager at {url}: {reason}; check --alertmanager "
                         "and that it runs") from exc
    return len(alerts)


def batch_sender(url: str, sent: list[int] | None = None
                 ) -> Callable[[duckdb.DuckDBPyConnection, AnalysisResult], None]:
    """For ``run_analysis(on_result=...)``: send the analysed incidents once, open or resolved
    as of the newest event analysed; appends the count to ``sent``."""
    def send(con: duckdb.DuckDBPyConnection, result: AnalysisResult) -> None:
        row = con.execute("SELECT epoch_us(max(ts)) FROM event_log").fetchone()
        newest = int(row[0]) if row and row[0] is not None else result.until_us or 0
        as_of = min(newest, result.until_us) if result.until_us else newest
        alerts = build_alerts(con, result.incidents, as_of_us=as_of,
                              interval_us=result.interval_us)
        count = post_alerts(url, alerts)
        if sent is not None:
            sent.append(count)
    return send


@dataclass
class AlertPusher:
    """Posts the newest alerts from its own thread: at once when they change, all again every
    ``ttl_s / 2`` so open ones stay active, with backoff (1 s doubling to ``max_backoff_s``)
    while Alertmanager cannot be reached; ``on_error`` hears each failure in one line."""

    url: str
    ttl_s: float = TTL_S
    max_backoff_s: float = 60.0
    on_error: Callable[[str], Any] | None = None
    sent: int = 0  # successful posts
    failures: int = 0
    _alerts: Sequence[IncidentAlert] = ()
    _changed: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AlertPusher:
        self._thread = threading.Thread(target=self._run, name="fleetlog-alerts", daemon=True)
        self._thread.start()
        return self

    def update(self, alerts: Sequence[IncidentAlert]) -> None:
        """The alerts as they are now: posted at once if they differ from the last ones."""
        alerts = tuple(alerts)
        if alerts != self._alerts:
            self._alerts = alerts
            self._changed.set()

    def close(self, flush_s: float = 5.0) -> None:
        """Stop after one last attempt to send what changed (at most ``flush_s``)."""
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=flush_s + TIMEOUT_S)

    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._changed.wait(timeout=backoff or self.ttl_s / 2)
            stopping = self._stop.is_set()
            if stopping and not self._changed.is_set():
                return
            self._changed.clear()
            try:
                post_alerts(self.url, self._alerts, ttl_s=self.ttl_s)
                self.sent += 1
                backoff = 0.0
            except AlertError as exc:
                self.failures += 1
                backoff = min(self.max_backoff_s, max(1.0, backoff * 2))
                if self.on_error is not None:
                    self.on_error(f"{exc} (retrying in {backoff:g} s)")
            if stopping:
                return
