"""Every fleetlog benchmark in one command, against a real local Kafka broker of its own.

    .venv/bin/python bench/suite.py            # full: ~30 min on 2 cores -> BENCHMARKS.md
    .venv/bin/python bench/suite.py --quick    # smoke: ~3 min -> .fleetlog/bench-quick/
    .venv/bin/python bench/render.py bench/results/benchmarks.json   # re-render from the data

It starts a broker on a free port with its own data folder (under --work), runs the plan below,
stops the broker and deletes the folder (``--keep`` keeps it), saves every measurement as JSON,
then renders the Markdown report and its PNG plots from that JSON (``bench/render.py``).

The plan, each step in its own processes, medians over ``runs``:
1. scaling points by fleet size: the generator into Kafka, ``fleetlog ingest`` of everything
   into DuckDB, ``fleetlog analyze`` and the same detections in polars (their agreement
   checked) on the landed store;
2. at the main point: producing (generator vs kafka-producer-perf-test, same count and size of
   records), landing the gpu topic (``fleetlog ingest`` vs a hand-written confluent-kafka consumer
   vs quixstreams vs kafka-consumer-perf-test), and scale-out (1, 2, 4 ingesters in one group);
3. an ingester following a live paced stream for ``soak_s``, its RSS sampled (alongside: the
   day-long store for the analysis goal is built, untimed), then ``fleetlog analyze`` of that day;
4. the longer time windows, each only if the cost measured so far says it ends within
   ``--budget-min`` (so is the biggest fleet, measured after the main point).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

import machine  # noqa: E402
import stages  # noqa: E402
from polars_detect import agreement  # noqa: E402

from fleetlog.ingest import contract as c  # noqa: E402
from fleetlog.ingest.kafka import broker  # noqa: E402


@dataclass(frozen=True)
class Plan:
    mode: str
    runs: int  # repeats of each timed step (medians reported)
    main_nodes: int  # the size point used for produce / landing / scale-out
    sizes: tuple[int, ...]  # fleet sizes (nodes) at size_hours
    size_hours: float
    window_nodes: int  # fleet size of the time-window curve
    windows: tuple[float, ...]  # hours
    day_nodes: int  # analysis goal: a store of day_nodes x day_hours (built in DuckDB directly)
    day_hours: float
    day_fault_rate: float
    ingesters: tuple[int, ...]
    partitions: int
    soak_s: float
    soak_every_s: float
    soak_nodes: int
    soak_speed: float  # simulated seconds per wall second of the live stream
    fault_rate: float  # of the scaling points: enough faults for the detections to compare
    big_samples: int  # above this many GPU samples a point's ingest and polars run once (time)
    polars_max_rows: int  # above this, not at all (it would not fit beside the others)
    scenario: str = "mixed"  # of the scaling points: every kind of fault, on top of llama3's
    # The main point's window (producing, landing, scale-out), when not size_hours: long enough
    # that a fleetlog ingest run is ~9 batches, not three (at three, filling and draining the
    # decode/write pipeline weighs on the rate), and short enough for three runs (< big_samples).
    main_hours: float | None = None


FULL = Plan(
    mode="full", runs=3, main_nodes=2048, sizes=(256, 2048, 16384), size_hours=0.25,
    window_nodes=256, windows=(0.25, 1.0, 4.0), day_nodes=2048, day_hours=24.0,
    day_fault_rate=4.0, ingesters=(1, 2, 4), partitions=8, soak_s=600.0, soak_every_s=5.0,
    soak_nodes=2048, soak_speed=6.0, fault_rate=20.0, big_samples=5_000_000,
    polars_max_rows=60_000_000, main_hours=0.75,
)
QUICK = Plan(
    mode="quick", runs=1, main_nodes=128, sizes=(32, 128, 512), size_hours=0.1,
    window_nodes=32, windows=(0.1, 0.5), day_nodes=128, day_hours=1.0, day_fault_rate=4.0,
    ingesters=(1, 2, 4), partitions=8, soak_s=60.0, soak_every_s=2.0, soak_nodes=256,
    soak_speed=30.0, fault_rate=40.0, big_samples=5_000_000,
    polars_max_rows=60_000_000,
)


class Suite:
    def __init__(self, plan: Plan, work: Path, data: dict[str, Any]) -> None:
        self.plan = plan
        self.work = work
        self.data = data
        self.bootstrap = ""
        self.kafka_dir = work / "kafka"
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed / 60:5.1f} min] {text}", file=sys.stderr, flush=True)

    # -- broker -------------------------------------------------------------------------------
    def broker_up(self) -> None:
        port = broker.free_port()
        while not broker.port_free(port + 1):
            port = broker.free_port()
        self.say(f"starting a private Kafka broker on 127.0.0.1:{port} ({self.kafka_dir})")
        state = broker.up(self.kafka_dir, port=port)
        self.bootstrap = state.bootstrap
        self.data["settings"]["bootstrap"] = state.bootstrap

    def broker_down(self) -> None:
        broker.down(self.kafka_dir)

    # -- steps --------------------------------------------------------------------------------
    def repeat(self, what: str, step: Any, runs: int | None = None,
               deadline: float | None = None) -> dict[str, Any]:
        """``runs`` runs of ``step`` and their medians; fewer when another run would end past
        ``deadline`` (monotonic seconds; at least one run)."""
        out = []
        total = runs or self.plan.runs
        for i in range(total):
            started = time.monotonic()
            self.say(f"  {what} ({i + 1}/{total})")
            out.append(step())
            if deadline and i + 1 < total and \
                    time.monotonic() + (time.monotonic() - started) > deadline:
                self.say(f"  (stopping {what} after {i + 1} runs: the time budget)")
                break
        return {"runs": out, "median": stages.summarize(out)}

    def point(self, nodes: int, hours: float, *, main: bool = False) -> dict[str, Any]:
        """One scaling point: produce, ingest everything, analyze (fleetlog and polars)."""
        plan = self.plan
        self.say(f"point {nodes} nodes x {hours} h")
        prefixes = [f"b{uuid.uuid4().hex[:6]}" for _ in range(plan.runs if main else 1)]
        produce = []
        for i, prefix in enumerate(prefixes):
            stages.create_topics(self.bootstrap, prefix, plan.partitions)
            self.say(f"  generator -> Kafka ({i + 1}/{len(prefixes)})")
            produce.append(stages.simulate(nodes, hours, f"kafka://{self.bootstrap}",
                                           prefix=prefix, fault_rate=plan.fault_rate,
                                           scenario=plan.scenario))
        prefix = prefixes[0]
        gpu_topic = c.topic_name("gpu", prefix)
        point: dict[str, Any] = {
            "nodes": nodes, "hours": hours, "prefix": prefix,
            "gpu_samples": produce[0]["gpu_samples"], "port_samples": produce[0]["port_samples"],
            "events": produce[0]["events"], "faults": produce[0]["faults"],
            "produce": {"runs": produce, "median": stages.summarize(produce)},
            "gpu_topic": {"messages": stages.topic_messages(self.bootstrap, gpu_topic),
                          "bytes_on_broker": stages.topic_bytes(self.kafka_dir, gpu_topic)},
        }
        folder = self.work / f"p-{nodes}-{hours}"
        folder.mkdir(parents=True, exist_ok=True)
        keep = folder / "store.duckdb"
        n = [0]

        def ingest_once() -> dict[str, Any]:
            n[0] += 1
            db = keep if n[0] == 1 else folder / f"run{n[0]}.duckdb"
            result = stages.ingest(self.bootstrap, prefix, db)
            if db != keep:
                db.unlink(missing_ok=True)
                db.with_name(db.name + ".offsets.json").unlink(missing_ok=True)
            return result

        runs = 1 if point["gpu_samples"] > plan.big_samples else plan.runs
        point["ingest"] = self.repeat("fleetlog ingest (every topic)", ingest_once, runs)
        point["store"] = {**stages.store_rows(keep), "db_bytes": keep.stat().st_size}
        point["analysis"] = self.analysis(keep, point["store"])
        shutil.rmtree(folder, ignore_errors=True)
        return point

    def analysis(self, db: Path, rows: dict[str, int], *, polars: bool = True,
                 deadline: float | None = None) -> dict[str, Any]:
        plan = self.plan
        out: dict[str, Any] = {"fleetlog": self.repeat("fleetlog analyze",
                                                        lambda: stages.analyze(db),
                                                        deadline=deadline)}
        sample_rows = rows["gpu_rows"] + rows["port_rows"]
        if not polars or sample_rows > plan.polars_max_rows:
            out["polars_skipped"] = (f"{sample_rows:,} sample rows is more than "
                                     f"{plan.polars_max_rows:,}: the polars version holds every "
                                     "row in memory (see its peak RSS per row at smaller sizes)")
            return out
        runs = plan.runs if rows["gpu_rows"] <= plan.big_samples else 1
        try:  # polars may run out of memory on a big store: keep fleetlog's figures then
            polars_runs = self.repeat("polars detections",
                                      lambda: stages.detections(db, "polars"), runs)
            found = polars_runs["runs"][0]["detections"]
            for r in polars_runs["runs"]:
                r.pop("detections", None)
            out["polars"] = polars_runs
            self.say("  fleetlog findings for the agreement check")
            fleet = stages.detections(db, "fleetlog")
            out["agreement"] = agreement(fleet["detections"], found)
        except stages.StepFailed as exc:
            self.say(f"  polars comparison failed: {exc}")
            out["polars_failed"] = str(exc)[-800:]
        return out

    def produce_ceiling(self, point: dict[str, Any]) -> dict[str, Any]:
        med = point["produce"]["median"]
        records, size = int(med["messages"]), int(med["record_size"])

        def once() -> dict[str, Any]:
            topic = f"ceiling-{uuid.uuid4().hex[:6]}"
            stages.create_topic(self.bootstrap, topic, self.plan.partitions)
            return stages.producer_perf(self.bootstrap, topic, records, size)

        return self.repeat(f"kafka-producer-perf-test {records} x {size} B", once)

    def landing(self, point: dict[str, Any]) -> dict[str, Any]:
        topic = c.topic_name("gpu", point["prefix"])
        messages = int(point["gpu_topic"]["messages"])
        samples = int(point["gpu_samples"])
        per_message = samples / max(messages, 1)
        folder = self.work / "landing"
        folder.mkdir(exist_ok=True)
        runs: dict[str, list[dict[str, Any]]] = {
            "kafka-consumer-perf-test": [], "fleetlog ingest": [], "confluent-kafka": [],
            "quixstreams": []}
        for i in range(self.plan.runs):
            tag = f"({i + 1}/{self.plan.runs})"
            self.say(f"  kafka-consumer-perf-test {tag}")
            runs["kafka-consumer-perf-test"].append(
                stages.consumer_perf(self.bootstrap, topic, messages, per_message))
            self.say(f"  fleetlog ingest --topics gpu {tag}")
            db = folder / f"fleetlog-{i}.duckdb"
            runs["fleetlog ingest"].append(
                stages.ingest(self.bootstrap, point["prefix"], db, topics="gpu"))
            for client, name in (("confluent", "confluent-kafka"), ("quix", "quixstreams")):
                self.say(f"  {name} -> DuckDB {tag}")
                runs[name].append(stages.landing_client(
                    client, self.bootstrap, topic, folder / f"{client}-{i}.duckdb", messages))
        shutil.rmtree(folder, ignore_errors=True)
        clients: dict[str, dict[str, Any]] = {
            k: {"runs": v, "median": stages.summarize(v)} for k, v in runs.items()}
        for name in ("fleetlog ingest", "confluent-kafka", "quixstreams"):
            landed = {r.get("gpu_samples") for r in runs[name]}
            clients[name]["landed_all"] = landed == {samples}
        return {"topic": topic, "messages": messages, "gpu_samples": samples,
                "gpu_samples_per_message": round(per_message, 2),
                "message_bytes": round(point["gpu_topic"]["bytes_on_broker"] / max(messages, 1)),
                "clients": clients}

    def scaleout(self, point: dict[str, Any]) -> list[dict[str, Any]]:
        """k ingesters following the gpu topic while the main point's messages are copied in."""
        topic = c.topic_name("gpu", point["prefix"])
        expected = int(point["gpu_samples"])
        messages = stages.read_topic(self.bootstrap, topic, int(point["gpu_topic"]["messages"]))
        return self._each_group_size("scale", "", lambda k, folder: stages.scaleout(
            self.bootstrap, messages, folder, k, expected, self.plan.partitions))

    def backlog(self, point: dict[str, Any]) -> list[dict[str, Any]]:
        """k ingesters started together on the main point's gpu topic, full already."""
        expected = int(point["gpu_samples"])
        return self._each_group_size("backlog", ", on the backlog", lambda k, folder: (
            stages.group_backlog(self.bootstrap, point["prefix"], folder, k, expected)))

    def _each_group_size(self, name: str, what: str,
                         measure: Callable[[int, Path], dict[str, Any]]) -> list[dict[str, Any]]:
        """``measure(k, folder)`` repeated for each group size of the plan, in a fresh folder."""
        out = []
        for k in self.plan.ingesters:
            def once(k: int = k) -> dict[str, Any]:
                folder = self.work / f"{name}-{k}-{uuid.uuid4().hex[:4]}"
                try:
                    return measure(k, folder)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)

            out.append({"ingesters": k,
                        **self.repeat(f"{k} ingester(s), one group{what}", once)})
        return out

    def day(self) -> dict[str, Any]:
        """Build (or reuse, with --work) the day store in DuckDB directly: untimed set-up."""
        plan = self.plan
        db = self.work / f"day-{plan.day_nodes}x{plan.day_hours:g}h.duckdb"
        meta = db.with_suffix(".json")
        want = {"nodes": plan.day_nodes, "hours": plan.day_hours, "seed": 1,
                "fault_rate": plan.day_fault_rate}
        if db.exists() and meta.exists() and json.loads(meta.read_text()) == want:
            return {"db": str(db), "reused": True, **want}
        db.unlink(missing_ok=True)
        built = stages.simulate(plan.day_nodes, plan.day_hours, f"duckdb:{db}",
                                fault_rate=plan.day_fault_rate)
        meta.write_text(json.dumps(want))
        return {"db": str(db), "reused": False, **want, "build": built}


def run(plan: Plan, work: Path, out_json: Path, doc: Path, keep: bool,
        budget_s: float | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": 1, "mode": plan.mode, "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.machine(), "versions": machine.versions(),
        "settings": asdict(plan), "errors": [],
    }
    data["settings"]["budget_min"] = round(budget_s / 60, 1) if budget_s else None
    from landing import BATCH_MESSAGES

    data["settings"]["batch_messages"] = BATCH_MESSAGES
    suite = Suite(plan, work, data)

    def save() -> None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        data["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        data["duration_s"] = round(time.monotonic() - suite.started, 1)
        out_json.write_text(json.dumps(data, indent=1, default=str) + "\n")

    def guarded(name: str, step: Any) -> Any:
        try:
            return step()
        except Exception as exc:  # one failed benchmark must not lose the others
            suite.say(f"{name} FAILED: {exc}")
            data["errors"].append({"step": name, "error": str(exc)[-1500:],
                                   "trace": traceback.format_exc()[-3000:]})
            return None
        finally:
            save()

    size_points: list[dict[str, Any]] = []
    data["scaling"] = {"size": size_points, "window": []}
    data["skipped"] = []
    costs: dict[str, float] = {}  # wall s per GPU sample and run of the biggest point so far

    def add_point(nodes: int, hours: float, curve: str, reserve_s: float = 0.0,
                  ) -> dict[str, Any] | None:
        """A scaling point, unless the measured cost of the points so far says it would not
        finish within --budget-min, less ``reserve_s`` kept for the goals' steps after it."""
        samples = nodes * 8 * hours * 360
        if budget_s and costs:
            estimate = costs["per_sample_run"] * samples
            left = budget_s - reserve_s - (time.monotonic() - suite.started)
            if estimate > left:
                why = (f"{nodes} nodes x {hours:g} h skipped: estimated {estimate / 60:.0f} min "
                       f"from the points measured so far, {left / 60:.0f} min of the budget left")
                suite.say(why)
                data["skipped"].append(why)
                return None
        started = time.monotonic()
        p: dict[str, Any] | None = guarded(f"point {nodes} x {hours:g} h", lambda: suite.point(
            nodes, hours, main=curve == "main"))
        if p and p["gpu_samples"] >= costs.get("samples", 0):  # the biggest point measured
            runs = max(len(p["ingest"]["runs"]), 1)
            costs["per_sample_run"] = (time.monotonic() - started) / max(p["gpu_samples"], 1) \
                / runs
            costs["samples"] = p["gpu_samples"]
        return p

    disk = machine.DiskWatch(work, data["machine"].setdefault("disk_free_gib", {})).start()
    suite.broker_up()
    try:
        suite.say("generator -> null (what simulating costs without Kafka)")
        data["generator_null"] = guarded("generator_null", lambda: stages.simulate(
            plan.main_nodes, plan.size_hours, "null:", fault_rate=plan.fault_rate,
            scenario=plan.scenario))
        # 1. The main point and the smaller sizes; producing, landing, scale-out on the main.
        main: dict[str, Any] | None = None
        main_hours = plan.main_hours or plan.size_hours
        for nodes in [n for n in plan.sizes if n <= plan.main_nodes]:
            is_main = nodes == plan.main_nodes and main_hours == plan.size_hours
            p = add_point(nodes, plan.size_hours, "main" if is_main else "size")
            if p:
                size_points.append(p)
                main = p if is_main else main
        if main_hours != plan.size_hours:
            main = add_point(plan.main_nodes, main_hours, "main")
            data["main"] = main
        if main is not None:
            data["produce"] = {
                "nodes": main["nodes"], "hours": main["hours"],
                "generator": main["produce"],
                "perf_test": guarded("produce ceiling", lambda: suite.produce_ceiling(main)),
            }
            suite.say("landing the gpu topic: four consumers, same messages")
            data["landing"] = guarded("landing", lambda: suite.landing(main))
            suite.say(f"scale-out on {plan.partitions} partitions")
            data["scaleout"] = guarded("scaleout", lambda: suite.scaleout(main))
            suite.say("scale-out on the backlog: ingesters started together on the full topic")
            data["backlog"] = guarded("backlog", lambda: suite.backlog(main))
        # The day store's build, measured at ~2.75 us per GPU sample (2,048 nodes x 24 h: 389 s).
        day_build_s = plan.day_nodes * 8 * plan.day_hours * 360 * 2.75e-6
        for nodes in [n for n in plan.sizes if n > plan.main_nodes]:  # bigger fleets
            # keep time for the day store's build, the soak and the day's analysis
            p = add_point(nodes, plan.size_hours, "size",
                          reserve_s=day_build_s + plan.soak_s * 1.25 + 120)
            if p:
                size_points.append(p)
        # 2. The goals' long steps: the day store (untimed set-up), memory while following,
        # alone on the machine (a build beside it changed the follower's batches and so its
        # working set), then the analysis of the day.
        suite.say("day store: building it (untimed)")
        day: dict[str, Any] = guarded("day build", suite.day) or {}
        suite.say(f"soak: following a live stream for {plan.soak_s:.0f} s, nothing else running")

        def soak() -> dict[str, Any]:
            return {**stages.soak(suite.bootstrap, work / "soak", plan.soak_s, plan.soak_nodes,
                                  plan.soak_speed, plan.soak_every_s), "alone": True}

        data["soak"] = guarded("soak", soak)
        if day.get("db"):
            db = Path(day["db"])
            suite.say(f"analysis of a {plan.day_nodes}-node {plan.day_hours:g} h store")
            rows = stages.store_rows(db)
            day.update(rows, db_bytes=db.stat().st_size)
            deadline = suite.started + budget_s if budget_s else None
            day["analysis"] = guarded("day analysis", lambda: suite.analysis(
                db, rows, polars=False, deadline=deadline))
            data["day"] = day
            if not keep:
                db.unlink(missing_ok=True)
        # 3. The longer windows, within the budget.
        for hours in plan.windows:
            same = [p for p in size_points
                    if p["nodes"] == plan.window_nodes and p["hours"] == hours]
            p = same[0] if same else add_point(plan.window_nodes, hours, "window")
            if p:
                data["scaling"]["window"].append(p)
    finally:
        suite.say("stopping the broker")
        suite.broker_down()
        disk.stop()
        save()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    import render

    render.render(out_json, doc)
    suite.say(f"wrote {out_json} and {doc}")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one run each (a smoke check, ~3 min)")
    parser.add_argument("--out", type=Path, help="folder for the JSON results and the plots "
                        "(default: bench/results, or .fleetlog/bench-quick with --quick)")
    parser.add_argument("--doc", type=Path, help="the Markdown report (default: BENCHMARKS.md, "
                        "or <out>/BENCHMARKS.md with --quick)")
    parser.add_argument("--work", type=Path, help="scratch folder for the broker and stores "
                        "(default: a new folder under the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep --work afterwards")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="skip the optional scaling points (bigger fleets, longer windows) "
                        "that the measured cost so far says would end past this many minutes "
                        "(default: 37 for the full run, none with --quick)")
    parser.add_argument("--soak-min", type=float, default=None,
                        help="minutes of the memory soak (default: 10 for the full run, 1 with "
                        "--quick); a longer soak resolves a slower drift")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.soak_min is not None:
        if args.soak_min <= 0:
            parser.error("--soak-min must be positive")
        plan = replace(plan, soak_s=args.soak_min * 60)
    out = args.out or (ROOT / ".fleetlog" / "bench-quick" if args.quick else BENCH / "results")
    doc = args.doc or (out / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md")
    work = args.work or Path(tempfile.mkdtemp(prefix="fleetlog-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    name = "quick.json" if args.quick else "benchmarks.json"
    budget = args.budget_min if args.budget_min is not None else (None if args.quick else 37.0)
    run(plan, work.resolve(), out / name, doc, args.keep or args.work is not None,
        budget * 60 if budget else None)


if __name__ == "__main__":
    main()
