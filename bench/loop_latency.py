"""Time from the decisive evidence to the alert at a webhook behind a real Alertmanager, and
to the node drained in a real Slurm.

    .venv/bin/python bench/loop_latency.py --bootstrap 127.0.0.1:19292 --nodes 2048 \
        --hours 0.5 --speed 60 [--slurm]

A simulated cluster streams into Kafka at ``--speed`` (a subprocess, paced by the wall clock);
``analyze --follow`` (``fleetlog.follow``, in this process) lands and analyzes it and keeps a
local Alertmanager (Debian's ``prometheus-alertmanager``, group_wait 1 s) told; a webhook here
records when each incident's first ``firing`` notification arrives. The evidence's event time T
happens, on the stream's own clock, at wall time W0 + (T − start) / speed, W0 being the
simulator's pacing origin (printed by the subprocess); the latency of an incident is its arrival
minus that wall time for its detection time (the event time of the decisive evidence). Prints
median and p95 (JSON).

With ``--slurm``, ``analyze --follow`` also issues the component actions as it finds incidents
(``recommendation.issued`` on ``<prefix>.analysis``) and ``fleetlog act --follow --execute`` (a
subprocess, its own store) carries them out on a real single-host Slurm (the act tests' cluster,
tests/act/slurm_cluster.py) whose node names are the nodes the run's faults hit (found by a
first, unpaced simulation of the same seed into a store: one slurmd per name on loopback, at most
``--slurm-nodes``); the remediation policy drains on the first hardware failure (``DRAIN_FIRST``:
the default policy resets a GPU first, which Slurm cannot do). A drain's latency is its
``action.executed`` event time (wall clock, taken after the node's state was read back as
drained) minus the wall time of the incident's decisive evidence, as above.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from fleetlog.analysis.remediation import RemediationConfig
from fleetlog.follow import follow
from fleetlog.ingest.kafka.settings import resolve
from fleetlog.ingest.store import open_store

SIMULATE = """
import sys, time
from datetime import UTC, datetime
from fleetlog.generators.config import SimConfig
from fleetlog.generators.run import simulate
first = []
def clock():
    now = time.monotonic()
    if not first:
        first.append(now)
        print(time.time(), flush=True)  # the pacing origin W0, wall clock
    return now
nodes, hours, speed, start_us, prefix, bootstrap = sys.argv[1:]
config = SimConfig(nodes=int(nodes), hours=float(hours), seed=3, scenario="mixed",
                   fault_rate=40.0, start=datetime.fromtimestamp(int(start_us) // 10**6, tz=UTC))
simulate(config, f"kafka://{bootstrap}", speed=float(speed), topic_prefix=prefix, clock=clock)
"""

DRAIN_FIRST = ("[escalation]\nreboot_after = 1\ndrain_after = 1\n"
               "[circuit_breaker]\nmax_drain_share = 1.0\n")


def _struck_nodes(nodes: int, hours: float, start_us: int, limit: int) -> tuple[str, ...]:
    """The nodes the run's faults hit (the same seed, unpaced, into a store of its own)."""
    from datetime import UTC, datetime

    from fleetlog.generators.config import SimConfig
    from fleetlog.generators.run import simulate

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "plan.duckdb"
        simulate(SimConfig(nodes=nodes, hours=hours, seed=3, scenario="mixed", fault_rate=40.0,
                           start=datetime.fromtimestamp(start_us // 10**6, tz=UTC)),
                 f"duckdb:{db}")
        con = open_store(db, read_only=True)
        rows = con.execute("SELECT entity, affected FROM truth_faults ORDER BY start_ts")
        faults = rows.fetchall()
        names: list[str] = []
        # the roots first (the drains target them), then what they hit
        for ref in [e for e, _a in faults] + [a for _e, hit in faults for a in hit or []]:
            kind, _, rest = ref.partition(":")
            name = rest.split("/", 1)[0]
            if kind in ("gpu", "node", "nic") and name not in names:
                names.append(name)
        con.close()
    return tuple(names[:limit])


WEBHOOK = """
import http.server, json, sys, time
out = open(sys.argv[2], "a", buffering=1)
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        now = time.time()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for alert in body["alerts"]:
            if alert["status"] == "firing":
                out.write(json.dumps([alert["labels"]["incident_id"], now]) + "\\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--nodes", type=int, default=2048)
    parser.add_argument("--hours", type=float, default=0.5)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=1.0, help="analysis cadence, wall s")
    parser.add_argument("--keep", type=Path, default=None, help="copy the follower's store here")
    parser.add_argument("--slurm", action="store_true",
                        help="also act: drain in a real single-host Slurm (make slurm)")
    parser.add_argument("--slurm-nodes", type=int, default=24,
                        help="at most this many struck nodes get a slurmd")
    args = parser.parse_args()
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        sys.exit("prometheus-alertmanager is not installed (make alertmanager)")
    arrivals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hook_port = _port()
        # the webhook in a process of its own: this one's GIL is busy analysing
        hook = subprocess.Popen([sys.executable, "-c", WEBHOOK, str(hook_port),
                                 str(folder / "arrivals.jsonl")])
        (folder / "am.yml").write_text(
            "route: {receiver: hook, group_by: [incident_id], group_wait: 1s, "
            "group_interval: 1s, repeat_interval: 1h}\nreceivers:\n- name: hook\n"
            f"  webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/'}}]\n")
        am_port = _port()
        am = subprocess.Popen([binary, f"--config.file={folder / 'am.yml'}",
                               f"--storage.path={folder / 'am'}", "--cluster.listen-address=",
                               f"--web.listen-address=127.0.0.1:{am_port}", "--log.level=warn"])
        url = f"http://127.0.0.1:{am_port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        prefix = f"lat-{int(time.time())}"
        start_us = int(time.time()) * 1_000_000  # whole seconds: the simulator's --start
        slurm = act = None
        if args.slurm:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "act"))
            # the act tests' cluster, loaded by path (tests/ is no package, nor in mypy's files)
            slurm_cluster: Any = importlib.import_module("slurm_cluster")
            struck = _struck_nodes(args.nodes, args.hours, start_us, args.slurm_nodes)
            slurm = slurm_cluster.Slurm(folder / "slurm", struck)
            (folder / "slurm").mkdir()
            slurm.start()
            (folder / "drain-first.toml").write_text(DRAIN_FIRST)
            act = subprocess.Popen(
                [str(Path(sys.executable).with_name("fleetlog")), "act", "--follow", "--db",
                 str(folder / "act.duckdb"), "--execute", "--slurm-conf", str(slurm.conf),
                 "--remediation-config", str(folder / "drain-first.toml"), "--bootstrap",
                 args.bootstrap, "--topic-prefix", prefix, "--until-idle", "90s", "--json"],
                stdout=(folder / "act.out").open("w"), stderr=subprocess.STDOUT)
            time.sleep(3)  # let it join its consumer group before anything is published
        sim = subprocess.Popen(
            [sys.executable, "-c", SIMULATE, str(args.nodes), str(args.hours), str(args.speed),
             str(start_us), prefix, args.bootstrap], stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            w0 = float(sim.stdout.readline())
            db = folder / "live.duckdb"
            stats = follow(db, resolve(args.bootstrap, env={}), topic_prefix=prefix,
                           every_s=args.every, idle_exit_s=10.0, alertmanager=url,
                           remediation=RemediationConfig.load(folder / "drain-first.toml")
                           if args.slurm else None)
            sim.wait()
            con = open_store(db, read_only=True)
            detect = {row["incident_id"]: row["detected_ts"] for row in stats.incidents}
            by_category: dict[str, int] = {}
            for row in stats.incidents:
                by_category[row["category"]] = by_category.get(row["category"], 0) + 1
            if args.keep is not None:
                shutil.copy(db, args.keep)
            detect_us = dict(con.execute(
                "SELECT event_id, epoch_us(ts) FROM event_log WHERE type = 'incident.opened'"
            ).fetchall())
            con.close()
            drains: list[tuple[str, float]] = []
            skipped: dict[str, int] = {}
            if act is not None:
                act.wait(timeout=300)
                print((folder / "act.out").read_text()[-3000:], file=sys.stderr)
                act_con = open_store(folder / "act.duckdb", read_only=True)
                drains = [(i, t / 1e6) for i, t in act_con.execute(
                    "SELECT payload->>'incident_id', epoch_us(ts) FROM event_log "
                    "WHERE type = 'action.executed' AND payload->>'action' IN "
                    "('drain_node', 'reboot_node', 'rma')").fetchall()]
                skipped = dict(act_con.execute(
                    "SELECT payload->>'action' || ': ' || (payload->>'why'), count(*) "
                    "FROM event_log WHERE type = 'action.skipped' GROUP BY ALL").fetchall())
                act_con.close()
        finally:
            sim.kill()
            if act is not None:
                act.kill()
            if slurm is not None:
                slurm.stop()
            am.terminate()
            am.wait()
            hook.terminate()
            hook.wait()
            for line in (folder / "arrivals.jsonl").read_text().splitlines():
                incident_id, at = json.loads(line)
                arrivals.setdefault(incident_id, at)

    def evidence_wall(incident_id: str) -> float:
        return float(w0 + (detect_us[incident_id] - start_us) / 1e6 / args.speed)

    lat = [arrivals[i] - evidence_wall(i) for i in detect if i in arrivals and i in detect_us]
    drained = [at - evidence_wall(i) for i, at in drains if i in detect_us]
    print(json.dumps({
        "nodes": args.nodes, "hours": args.hours, "speed": args.speed, "every_s": args.every,
        "incidents": len(detect), "by_category": by_category, "alerted": len(lat),
        "alert_latency_median_s": round(float(np.median(lat)), 2) if lat else None,
        "alert_latency_p95_s": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "analysis_median_s": stats.summary()["analysis_median_s"],
        **({"recommendations_issued": stats.recommendations, "skipped": skipped,
            "drained": len(drained),
            "drain_latency_median_s": round(float(np.median(drained)), 2) if drained else None,
            "drain_latency_p95_s": round(float(np.percentile(drained, 95)), 2) if drained
            else None} if args.slurm else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
