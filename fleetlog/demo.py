"""The demo pipeline: what `fleetlog demo` runs, stage by stage, on a small simulated cluster.

simulate -> (Kafka -> ingest, when a broker is given or running; straight into the store
otherwise) -> analyze -> recommend -> evaluate against the injected faults -> report.

It composes every stage (generators, the Kafka ingester, analysis), so it lives here on the top
floor, where importing them all is no backwards import: below, analysis reads the store and
imports neither the generators nor the ingestion stage. The stages are imported when the demo
runs, not when the command line loads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetlog.ingest.kafka.broker import answers
from fleetlog.ingest.kafka.settings import settings_for


def choose_transport(bootstrap: str | None) -> tuple[str, str | None, str]:
    """Kafka when a broker is given or reachable; the embedded mode otherwise. Says why."""
    settings = settings_for(bootstrap)
    if settings.origin != "default" or bootstrap:
        if answers(settings.bootstrap, timeout_s=3.0):
            return "kafka", settings.bootstrap, f"broker from {settings.origin} answers"
        return "embedded", None, (
            f"broker {settings.bootstrap} (from {settings.origin}) does not answer"
        )
    return "embedded", None, "no broker given or running (start one with `fleetlog kafka up`)"


def run_demo(
    out: Path, *, bootstrap: str | None = None, nodes: int = 64, hours: float = 12.0,
    seed: int = 7, scenario: str = "mixed", fault_rate: float = 40.0,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    from fleetlog.analysis.evaluate import evaluate_stores
    from fleetlog.analysis.pipeline import run_analysis
    from fleetlog.analysis.recommend import recommend
    from fleetlog.analysis.report import write_report
    from fleetlog.generators.config import SimConfig
    from fleetlog.generators.run import simulate

    say = progress or (lambda _text: None)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "fleetlog.duckdb"
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)  # a demo starts from scratch
    mode, address, why = choose_transport(bootstrap)
    say(f"transport: {mode} ({why})")
    config = SimConfig(nodes=nodes, hours=hours, seed=seed, scenario=scenario,
                       fault_rate=fault_rate)
    stages: dict[str, Any] = {}
    if mode == "kafka":
        from fleetlog.ingest.ingester import KafkaIngest, default_topics, ingest_kafka

        prefix = f"fleetlog-demo-{uuid.uuid4().hex[:8]}"  # this run's own topics
        say(f"simulate: {nodes} nodes, {hours:g} h, scenario {scenario} -> kafka://{address}"
            f" (topics {prefix}.*)")
        sim = simulate(config, ("kafka", address or ""), topic_prefix=prefix)
        say("ingest: Kafka -> DuckDB until the topics are idle")
        settings = settings_for(address, topic_prefix=prefix)
        stats = ingest_kafka(
            KafkaIngest(db=db, topics=default_topics(prefix), group=f"{prefix}-ingest",
                        until_idle_s=3.0), settings)
        stages["ingest"] = {"events": stats.to_json().get("events"),
                            "dead_letters": stats.to_json().get("dead_letters")}
    else:
        say(f"simulate: {nodes} nodes, {hours:g} h, scenario {scenario} -> {db}")
        sim = simulate(config, ("duckdb", str(db)))
    stages["simulate"] = {k: sim[k] for k in ("events", "gpu_samples", "faults", "jobs",
                                             "job_failures") if k in sim}
    say("analyze: detect, diagnose, store incidents")
    analysis = run_analysis([db])
    stages["analyze"] = {"incidents": analysis["incidents"]}
    say("recommend: component and job actions per incident")
    stages["recommend"] = {"recommendations": len(recommend([db]))}
    say("evaluate: incidents against the injected faults (ground truth)")
    scores = evaluate_stores([[str(db)]])
    stages["evaluate"] = {
        "faults": scores["faults"], "precision": scores["precision"],
        "recall": scores["recall"], "f1": scores["f1"],
        **{k: v for k, v in scores["overall"].items() if k.startswith(("ac", "avg"))},
    }
    say("report: HTML, Markdown and JSON for the whole run")
    report = write_report([db], out / "reports", window_s=hours * 3600)
    html = next((f for f in report["files"] if f.endswith(".html")), None)
    say(f"done: open {html}")
    return {
        "transport": mode,
        "bootstrap": address,
        "why": why,
        "db": str(db.resolve()),
        **{f"{stage}": summary for stage, summary in stages.items()},
        "report": html,
    }
