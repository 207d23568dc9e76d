"""The CLI's grammar (docs/cli.md): one spelling per thing across every command, durations with
units, times absolute or relative to now, and the old spellings kept one release as aliases."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fleetlog.cli.main import cli
from fleetlog.cli.params import Duration, SinkUri, UtcTime, duration_text
from fleetlog.ingest.kafka.settings import resolve

DOCS = Path(__file__).parents[2] / "docs"
T4 = Path(__file__).parents[1] / "fixtures" / "dcgm" / "datadog__dcgm-exporter-tesla-t4.metrics"
AT = "2025-03-01T12:00:00Z"

# Option names that say "a length of time" or "a moment": each must use the one type for it.
DURATION_NAME = re.compile(r"timeout|interval|every|idle|lookback|window|duration|overhead|"
                           r"watchdog|max-time|seconds|hours|minutes|delay|wait|period")
TIME_NAME = re.compile(r"^--(at|since|until|start|time|boot-time)$")


def _options() -> Iterator[tuple[str, click.Option]]:
    """(command path, option) for every visible option of every command."""

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Option]]:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}")
            return
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                yield path, param

    yield from walk(cli, "fleetlog")


def _aliases() -> list[tuple[str, click.Option]]:
    """(command path, hidden option) for every deprecated spelling."""
    aliases = []
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.hidden and param.name \
                    and param.name.startswith("_old_"):
                aliases.append((f"fleetlog {name}", param))
    return aliases


OPTIONS = list(_options())
DURATION_OPTIONS = [(p, o) for p, o in OPTIONS
                    if any(DURATION_NAME.search(name) for name in o.opts)]
TIME_OPTIONS = [(p, o) for p, o in OPTIONS if any(TIME_NAME.match(name) for name in o.opts)]


def _id(item: tuple[str, click.Option]) -> str:
    return f"{item[0]} {item[1].opts[0]}"


def _invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _summary(stdout: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(stdout)
    data.pop("wall_s", None)
    data.pop("gpu_samples_per_s", None)
    data.pop("events_per_s", None)
    return data


# ----------------------------------------------------------------------------------------------
# Every option of one kind uses the one type for it


def test_the_walk_finds_the_duration_and_time_options() -> None:
    found = {_id(item) for item in DURATION_OPTIONS}
    assert {"fleetlog ingest --until-idle", "fleetlog analyze --every",
            "fleetlog scrape --interval", "fleetlog sql --timeout",
            "fleetlog kafka up --timeout", "fleetlog simulate --duration"} <= found
    assert {"fleetlog state --at", "fleetlog analyze --since",
            "fleetlog import --time"} <= {_id(item) for item in TIME_OPTIONS}


@pytest.mark.parametrize("item", DURATION_OPTIONS, ids=[_id(i) for i in DURATION_OPTIONS])
def test_every_duration_option_is_a_duration_with_its_default_in_units(
        item: tuple[str, click.Option]) -> None:
    path, option = item
    assert isinstance(option.type, Duration), f"{_id(item)} is {option.type!r}, not Duration"
    assert option.metavar in (None, "DURATION"), f"{_id(item)} says {option.metavar}"
    if option.default is not None:
        # Written with its unit, so help says [default: 5s], not [default: 5.0].
        assert isinstance(option.default, str) and option.default[-1].isalpha(), option.default
        words = path.split()[1:]
        help_text = CliRunner().invoke(cli, [*words, "--help"], terminal_width=200).output
        assert f"[default: {option.default}]" in help_text


@pytest.mark.parametrize("item", TIME_OPTIONS, ids=[_id(i) for i in TIME_OPTIONS])
def test_every_time_option_is_a_utc_time(item: tuple[str, click.Option]) -> None:
    assert isinstance(item[1].type, UtcTime), f"{_id(item)} is {item[1].type!r}"


def test_every_target_is_to_and_every_broker_is_bootstrap() -> None:
    for path, option in OPTIONS:
        if isinstance(option.type, SinkUri):
            assert option.opts == ["--to"], f"{path}: a target is --to, not {option.opts}"
        if "--bootstrap" in option.opts:
            assert option.metavar == "HOST:PORT"
    emitters = {path for path, option in OPTIONS if option.opts == ["--to"]}
    assert emitters == {"fleetlog simulate", "fleetlog replay", "fleetlog import",
                        "fleetlog scrape"}


def test_bootstrap_takes_the_address_as_to_writes_it() -> None:
    assert resolve("kafka://10.0.0.7:9092", env={}).bootstrap == "10.0.0.7:9092"
    assert resolve("10.0.0.7:9092", env={}).bootstrap == "10.0.0.7:9092"


# ----------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("5s", 5.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1h30m", 5400.0), ("2m30s", 150.0), ("1.5h", 5400.0), (".5s", 0.5), ("5 M", 300.0),
    ("30", 30.0), ("2.5", 2.5),
])
def test_each_duration_form(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize(("text", "why"), [
    ("5x", "is not a duration"), ("m", "is not a duration"), ("5m3", "is not a duration"),
    ("-5s", "must be positive"), ("0", "must be positive"), ("0s", "must be positive"),
    ("nan", "not a finite duration"), ("1e400", "not a finite duration"),
    ("300y", "is not a duration"), ("1000000d", "longer than the valid time range"),
])
def test_what_is_no_duration_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(click.BadParameter, match=why):
        Duration().convert(text, None, None)


def test_zero_only_where_the_option_says_what_it_means(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    assert _invoke("init", "--db", db)[0] == 0
    code, out, err = _invoke("sql", "--db", db, "--timeout", "0s", "SELECT 1 AS one")
    assert code == 0, err  # sql --timeout 0: no limit
    assert json.loads(out) == [{"one": 1}]
    code, _, err = _invoke("kafka", "up", "--timeout", "0")  # would never wait: refused
    assert code == 2 and "'0' must be positive" in err
    code, _, err = _invoke("ingest", "--db", db, "--session-timeout", "5s")
    assert code == 2 and "'5s' must be at least 6s" in err


def test_duration_text_is_the_shortest_exact_spelling() -> None:
    assert [duration_text(s) for s in (7200, 0.5, 90, 600, 86400, 1.25)] == [
        "2h", "500ms", "90s", "10m", "1d", "1250ms"]


def test_ingest_until_idle_takes_units(tmp_path: Path) -> None:
    """`ingest --until-idle 5m` was refused ("not a valid float range") before."""
    folder = tmp_path / "out"
    code, _, err = _invoke("simulate", "--nodes", "4", "--duration", "2m", "--to",
                           f"jsonl:{folder}")
    assert code == 0, err
    code, out, err = _invoke("ingest", "--from", f"jsonl:{folder}", "--db", tmp_path / "x.duckdb",
                             "--until-idle", "5m", "--json")
    assert code == 0, err
    assert json.loads(out)["events"] > 0


def test_simulate_duration_in_minutes_is_the_same_as_in_seconds() -> None:
    code, in_minutes, err = _invoke("simulate", "--nodes", "4", "--duration", "3m", "--to",
                                    "null:")
    assert code == 0, err
    code, in_seconds, err = _invoke("simulate", "--nodes", "4", "--duration", "180", "--to",
                                    "null:")
    assert code == 0, err
    assert _summary(in_minutes) == _summary(in_seconds)
    assert _summary(in_minutes)["hours"] == 0.05


# ----------------------------------------------------------------------------------------------
# Times


def test_relative_times_count_from_one_now() -> None:
    ctx = click.Context(cli)
    before = datetime.now(UTC)
    now = UtcTime().convert("now", None, ctx)
    after = datetime.now(UTC)
    assert before <= now <= after
    assert UtcTime().convert("-15m", None, ctx) == now - timedelta(minutes=15)
    assert UtcTime().convert("now-2h", None, ctx) == now - timedelta(hours=2)
    assert UtcTime().convert("now - 1h30m", None, ctx) == now - timedelta(minutes=90)
    assert UtcTime().convert("now+1d", None, ctx) == now + timedelta(days=1)
    assert UtcTime().convert("NOW-500ms", None, ctx) == now - timedelta(milliseconds=500)


@pytest.mark.parametrize(("text", "why"), [
    ("now-x", "after the sign comes a duration"), ("-nan", "after the sign comes a duration"),
    ("now-300y", "after the sign comes a duration"), ("now--5m", "after the sign comes"),
    ("now-1000000d", "after the sign comes a duration"), ("yesterday", "is not a time"),
    ("2026-01-05T06:00:00", "has no time zone"), ("2300-01-01T00:00:00Z", "outside the valid"),
])
def test_what_is_no_time_is_refused_saying_why(text: str, why: str) -> None:
    with pytest.raises(click.BadParameter, match=why):
        UtcTime().convert(text, None, click.Context(cli))


def test_absolute_times_keep_their_zone_and_answer_in_utc() -> None:
    parsed = UtcTime().convert("2026-01-05T07:00:00+01:00", None, None)
    assert parsed == datetime(2026, 1, 5, 6, tzinfo=UTC) and parsed.tzinfo is UTC


def test_state_at_takes_a_relative_time_as_its_own_word(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    code, _, err = _invoke("simulate", "--nodes", "4", "--duration", "2m", "--to", f"duckdb:{db}")
    assert code == 0, err
    before = datetime.now(UTC)
    code, out, err = _invoke("state", "--db", db, "--at", "-15m")
    after = datetime.now(UTC)
    assert code == 0, err
    at = datetime.fromisoformat(json.loads(out)["at"])
    assert before - timedelta(minutes=15) <= at <= after - timedelta(minutes=15)


# ----------------------------------------------------------------------------------------------
# Old spellings: still work, say what to type instead, and clash with the new one


def _said(err: str, old: str, instead: str) -> None:
    lines = [line for line in err.splitlines() if "deprecated" in line]
    assert len(lines) == 1, err
    assert f"{old} is deprecated" in lines[0] and lines[0].endswith(f"use {instead}")


def test_simulate_hours_is_duration_in_hours() -> None:
    code, old, err = _invoke("simulate", "--nodes", "4", "--hours", "0.05", "--to", "null:")
    assert code == 0, err
    _said(err, "--hours", "--duration 3m")
    code, new, err = _invoke("simulate", "--nodes", "4", "--duration", "3m", "--to", "null:")
    assert (code, err) == (0, "")
    assert _summary(old) == _summary(new)
    code, _, err = _invoke("simulate", "--hours", "1", "--duration", "1h", "--to", "null:")
    assert code == 2 and "--hours is the old spelling of --duration: give one" in err
    code, _, err = _invoke("simulate", "--hours", "nan", "--to", "null:")
    assert code == 2 and "'nan' is not a finite number" in err


@pytest.mark.parametrize("command", ["analyze", "act"])
@pytest.mark.parametrize(("old", "new"), [("--max-seconds", "--max-time"),
                                          ("--idle-exit", "--until-idle")])
def test_follow_limits_old_spellings_reach_the_new_option(tmp_path: Path, command: str, old: str,
                                                          new: str) -> None:
    # Without --follow both commands refuse the new option by name: proof the old one reached it.
    code, _, err = _invoke(command, "--db", tmp_path / "x.duckdb", old, "600")
    assert code == 2, err
    _said(err, old, f"{new} 10m")
    assert f"{new}" in err.splitlines()[-1] and "--follow" in err.splitlines()[-1]
    code, _, err = _invoke(command, "--db", tmp_path / "x.duckdb", old, "1m", new, "1m")
    assert code == 2 and f"{old} is the old spelling of {new}: give one" in err


def test_import_db_is_to_duckdb(tmp_path: Path) -> None:
    old_db, new_db = tmp_path / "old.duckdb", tmp_path / "new.duckdb"
    code, old, err = _invoke("import", "--db", old_db, "--time", AT, T4)
    assert code == 0, err
    _said(err, "--db", f"--to duckdb:{old_db}")
    code, new, err = _invoke("import", "--to", f"duckdb:{new_db}", "--time", AT, T4)
    assert (code, err) == (0, "")
    old_summary, new_summary = json.loads(old), json.loads(new)
    assert old_summary.pop("target") == f"duckdb:{old_db}"
    assert new_summary.pop("target") == f"duckdb:{new_db}"
    assert old_summary == new_summary and new_summary["landed"] > 0


def test_import_without_a_target_says_how_to_name_one() -> None:
    code, _, err = _invoke("import", "--time", AT, T4)
    assert code == 2
    assert err.splitlines()[-1] == ("Error: say where the events go: --to duckdb:PATH or --to "
                                    "kafka://HOST:PORT")


def test_recommend_config_is_remediation_config(tmp_path: Path) -> None:
    db = tmp_path / "fleet.duckdb"
    config = tmp_path / "remediation.toml"
    config.write_text("[escalation]\nreboot_after = 1\ndrain_after = 1\n")
    for args in (["simulate", "--nodes", "8", "--duration", "1h", "--scenario", "gpu_hw",
                  "--seed", "0", "--to", f"duckdb:{db}"], ["analyze", "--db", str(db)]):
        code, _, err = _invoke(*args)
        assert code == 0, err
    code, old, err = _invoke("recommend", "--db", db, "--no-write", "--config", config)
    assert code == 0, err
    _said(err, "--config", f"--remediation-config {config}")
    code, new, err = _invoke("recommend", "--db", db, "--no-write", "--remediation-config",
                             config)
    assert (code, err) == (0, "")
    code, default, err = _invoke("recommend", "--db", db, "--no-write")
    assert code == 0, err
    assert json.loads(old) == json.loads(new) != json.loads(default)


def test_every_old_spelling_is_documented_and_hidden_from_help() -> None:
    page = (DOCS / "cli.md").read_text()
    table = page[page.index("## Old spellings"):]
    aliases = _aliases()
    assert len(aliases) == 7  # simulate 1, analyze 2, act 2, recommend 1, import 1
    for path, option in aliases:
        old = option.opts[0]
        row = next((line for line in table.splitlines()
                    if f"`{old}" in line and f"`{path.split()[1]}`" in line), None)
        assert row is not None, f"docs/cli.md does not list {path} {old}"
        help_text = CliRunner().invoke(cli, [path.split()[1], "--help"]).output
        assert not re.search(rf"^\s+{re.escape(old)}\b", help_text, re.M), (path, old)


def test_the_grammar_page_is_linked_from_the_command_reference() -> None:
    assert "[cli.md](cli.md)" in (DOCS / "commands.md").read_text()


def test_a_target_names_its_place_except_the_default_broker() -> None:
    assert SinkUri().convert("kafka:", None, None) == ("kafka", "")
    assert SinkUri().convert("kafka://h:9092", None, None) == ("kafka", "h:9092")
    assert SinkUri().convert("null:", None, None) == ("null", "")
    for text in ("duckdb:", "jsonl:"):
        with pytest.raises(click.BadParameter, match="names no path"):
            SinkUri().convert(text, None, None)


@pytest.mark.kafka
def test_to_kafka_alone_is_the_broker_bootstrap_would_use(
        kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLOG_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("FLEETLOG_TOPIC_PREFIX", f"grammar-{uuid.uuid4().hex[:8]}")
    code, out, err = _invoke("simulate", "--nodes", "4", "--duration", "1m", "--to", "kafka:")
    assert code == 0, err
    assert json.loads(out)["to"] == f"kafka://{kafka_bootstrap}"
