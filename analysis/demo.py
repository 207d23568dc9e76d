"""The demo pipeline: what `fleetlog demo` runs, stage by stage, on a small simulated cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.broker import answers
from ingest.kafka_settings import settings_for
from ingest.store import describe_store


def choose_transport(bootstrap: str | None) -> tuple[str, str | None, str]:
    """Kafka when a broker is given or reachable; the embedded mode otherwise. Says why."""
    settings = settings_for(bootstrap)
    if settings.origin != "default" or bootstrap:
        if answers(settings.bootstrap, timeout_s=3.0):
            return "kafka", settings.bootstrap, f"broker from {settings.origin} answers"
        if bootstrap or settings.origin in ("environment", "command line"):
            return "embedded", None, (
                f"broker {settings.bootstrap} (from {settings.origin}) does not answer"
            )
    return "embedded", None, "no broker given or running (start one with `fleetlog kafka up`)"


def run_demo(
    out: Path, *, bootstrap: str | None = None, progress: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    say = progress or (lambda _text: None)
    out.mkdir(parents=True, exist_ok=True)
    mode, address, why = choose_transport(bootstrap)
    say(f"transport: {mode} ({why})")
    db = out / "fleetlog.duckdb"
    store = describe_store(db)
    say(f"store: {store['db']} (schema v{store['schema_version']})")
    return {
        "transport": mode,
        "bootstrap": address,
        "why": why,
        "db": store["db"],
        "schema_version": store["schema_version"],
        "stages_run": ["store"],
    }
