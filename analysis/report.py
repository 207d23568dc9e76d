"""Batch reports: one window of the store as self-contained HTML, Markdown and JSON.

``write_report`` is deterministic: the same store and window give the same files, under names
derived from the window, so reporting a window again rewrites the same report; ``latest.html``
beside them is always the last HTML report written (a stable address for a bookmark or a wiki).
Those names are predictable, so each file is written to a temporary file in the folder and
renamed into place (a reader sees the old report or the new one, never half of one), and a
symbolic link at a file's name is refused rather than followed. ``run_every`` repeats it on a
schedule and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetlog.analysis import charts
from fleetlog.analysis.report_data import ReportError, Window, report_data, resolve_window
from fleetlog.ingest.store import open_union

FORMATS = ("html", "md", "json")
LATEST = "latest.html"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _table_md(rows: list[dict[str, Any]], empty: str) -> str:
    if not rows:
        return f"_{empty}_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _table_html(rows: list[dict[str, Any]], empty: str) -> str:
    if not rows:
        return f"<p class=empty>{html.escape(empty)}</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in cols) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:.5rem 0}td,th{border:1px solid #ddd;
padding:2px 6px;text-align:left}th{background:#f4f4f4}.kpis{display:flex;gap:1rem;flex-wrap:wrap}
.kpi{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}.kpi b{display:block;
font-size:1.3rem}.chart svg{max-width:100%;height:auto}.empty{color:#777}"""

# Marks the page once every chart has a non-empty box; the browser test reads it.
_JS = """document.addEventListener('DOMContentLoaded',function(){
var s=document.querySelectorAll('.chart svg'),ok=s.length>0;
s.forEach(function(e){var b=e.getBoundingClientRect();if(!(b.width>0&&b.height>0))ok=false;});
document.body.setAttribute('data-charts',ok?'rendered':'missing');});"""


def render_html(data: dict[str, Any], svgs: dict[str, str]) -> str:
    w, fleet = data["window"], data["fleet"]
    kpis = [("nodes", fleet["nodes"]), ("GPUs", fleet["gpus"]), ("incidents", fleet["incidents"]),
            ("fatal XIDs", fleet["fatal_xids"]), ("job failures", fleet["job_failures"]),
            ("nodes down", fleet["down"]), ("lost GPU-hours", data["lost_gpu_hours"]),
            ("dead letters", fleet["dead_letters"])]
    kpi_html = "".join(f"<div class=kpi>{html.escape(k)}<b>{html.escape(str(v))}</b></div>"
                       for k, v in kpis)
    title = f"fleetlog report {_cell(w['start'])} – {_cell(w['end'])} UTC"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Fleet health</h2><div class=kpis>{kpi_html}</div>
<h2>Incidents over time</h2><div class=chart id=incidents-chart>{svgs['incidents']}</div>
<h2>Incidents for triage (open first, then by severity)</h2>
{_table_html(data['incidents'], 'No incidents in this window.')}
<h2>Actions taken</h2>
{_table_html(data['actions_taken'], 'No actions taken in this window.')}
<h2>Job outcomes by cause (the scheduler's end states; no incident)</h2>
{_table_html(data['job_outcomes'], 'No scheduler records in this window.')}
<h2>Lost GPU-hours and ETTR per job</h2>
{_table_html(data['jobs'], 'No job events in this window.')}
<h2>MTBF trend (node-hours between incidents, per {w['bucket']})</h2>
{_table_html(data['mtbf_trend'], 'No data.')}
<h2>Worst components</h2>
{_table_html(data['worst_components'], 'No failing components in this window.')}
<h2>Errors by rack</h2><div class=chart id=rack-chart>{svgs['racks']}</div>
<script>{_JS}</script>
</body></html>
"""


def render_md(data: dict[str, Any], chart_files: dict[str, str]) -> str:
    w, fleet = data["window"], data["fleet"]
    lines = [
        f"# fleetlog report {_cell(w['start'])} – {_cell(w['end'])} UTC", "",
        "## Fleet health", "",
        _table_md([{"metric": k, "value": v} for k, v in fleet.items()]
                  + [{"metric": "lost_gpu_hours", "value": data["lost_gpu_hours"]}], ""),
        f"![incidents over time]({chart_files['incidents']})", "",
        "## Incidents for triage (open first, then by severity)", "",
        _table_md(data["incidents"], "No incidents in this window."),
        "## Actions taken", "",
        _table_md(data["actions_taken"], "No actions taken in this window."),
        "## Job outcomes by cause (the scheduler's end states; no incident)", "",
        _table_md(data["job_outcomes"], "No scheduler records in this window."),
        "## Lost GPU-hours and ETTR per job", "",
        _table_md(data["jobs"], "No job events in this window."),
        f"## MTBF trend (per {w['bucket']})", "",
        _table_md(data["mtbf_trend"], "No data."),
        "## Worst components", "",
        _table_md(data["worst_components"], "No failing components in this window."),
        f"![errors by rack]({chart_files['racks']})", "",
    ]
    return "\n".join(lines)


def write_report(
    paths: Sequence[str | Path], out: Path, *, window_s: float = 86_400.0,
    until: datetime | None = None, formats: Sequence[str] = FORMATS,
) -> dict[str, Any]:
    """Write the report files for one window; returns the window and the files written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ReportError(f"unknown report format {', '.join(unknown)}: use html, md or json")
    con = open_union(paths)
    try:
        window: Window = resolve_window(con, window_s, until)
        data = report_data(con, window)
    finally:
        con.close()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ReportError(f"{out} is a file: --out names the folder for the reports") from exc
    except OSError as exc:
        raise ReportError(f"cannot create the report folder {out}: {exc.strerror}") from exc
    stem = f"report-{window.slug()}"
    svgs = {
        "incidents": charts.incidents_over_time(data["mtbf_trend"],
                                                data["incidents_by_category"], window.bucket),
        "racks": charts.rack_heatmap(data["rack_errors"], data["mtbf_trend"]),
    }
    written: list[str] = []
    if "html" in formats:
        path = out / f"{stem}.html"
        page = render_html(data, svgs)
        write_file(path, page)
        write_file(out / LATEST, page)  # a stable name to bookmark: the last report written
        written.append(str(path))
    if "md" in formats:
        chart_files = {}
        for name, svg in svgs.items():
            chart = out / f"{stem}.{name}.svg"
            write_file(chart, svg)
            chart_files[name] = chart.name
        path = out / f"{stem}.md"
        write_file(path, render_md(data, chart_files))
        written.append(str(path))
    if "json" in formats:
        path = out / f"{stem}.json"
        write_file(path, json.dumps(data, default=_json_default, indent=2, sort_keys=True))
        written.append(str(path))
    return {"window_start": window.start, "window_end": window.end,
            "incidents": len(data["incidents"]), "files": written}


def write_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a temporary file in its folder, renamed into
    place. A symbolic link at ``path`` is refused: the names are predictable, and following one
    planted there would write wherever it points."""
    if path.is_symlink():
        raise ReportError(f"{path} is a symbolic link: remove it (fleetlog writes reports only "
                          "as regular files), or pass another --out")
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ReportError(f"cannot write in {path.parent}: {exc.strerror}") from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; a report is not
        tmp.replace(path)  # renames over the name: never follows a link planted since the check
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise ReportError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_every(
    interval_s: float, make: Callable[[], dict[str, Any]],
    on_report: Callable[[dict[str, Any]], None], *, stop: threading.Event | None = None,
) -> int:
    """Make a report now and every ``interval_s``; SIGTERM/SIGINT end it between reports."""
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda _s, _f: stop.set())
    runs = 0
    try:
        while not stop.is_set():
            try:
                on_report(make())
            except ReportError as exc:  # e.g. nothing ingested yet: say so and keep going
                on_report({"error": str(exc)})
            runs += 1
            stop.wait(interval_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return runs
