"""Time from the decisive evidence to the alert at a webhook behind a real Alertmanager.

    .venv/bin/python bench/alert_latency.py --bootstrap 127.0.0.1:19292 --nodes 2048 \
        --hours 0.5 --speed 60

A simulated cluster streams into Kafka at ``--speed`` (a subprocess, paced by the wall clock);
``analyze --follow`` (``fleetlog.follow``, in this process) lands and analyzes it and keeps a
local Alertmanager (Debian's ``prometheus-alertmanager``, group_wait 1 s) told; a webhook here
records when each incident's first ``firing`` notification arrives. The evidence's event time T
happens, on the stream's own clock, at wall time W0 + (T − start) / speed, W0 being the
simulator's pacing origin (printed by the subprocess); the latency of an incident is its arrival
minus that wall time for its detection time (the event time of the decisive evidence). Prints
median and p95 (JSON).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

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
        sim = subprocess.Popen(
            [sys.executable, "-c", SIMULATE, str(args.nodes), str(args.hours), str(args.speed),
             str(start_us), prefix, args.bootstrap], stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            w0 = float(sim.stdout.readline())
            db = folder / "live.duckdb"
            stats = follow(db, resolve(args.bootstrap, env={}), topic_prefix=prefix,
                           every_s=args.every, idle_exit_s=10.0, alertmanager=url)
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
        finally:
            sim.kill()
            am.terminate()
            am.wait()
            hook.terminate()
            hook.wait()
            for line in (folder / "arrivals.jsonl").read_text().splitlines():
                incident_id, at = json.loads(line)
                arrivals.setdefault(incident_id, at)
    lat = [arrivals[i] - (w0 + (detect_us[i] - start_us) / 1e6 / args.speed)
           for i in detect if i in arrivals and i in detect_us]
    print(json.dumps({
        "nodes": args.nodes, "hours": args.hours, "speed": args.speed, "every_s": args.every,
        "incidents": len(detect), "by_category": by_category, "alerted": len(lat),
        "alert_latency_median_s": round(float(np.median(lat)), 2) if lat else None,
        "alert_latency_p95_s": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "analysis_median_s": stats.summary()["analysis_median_s"],
    }, indent=2))


if __name__ == "__main__":
    main()
