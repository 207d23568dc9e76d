"""Config files checked against their dataclasses: a mistake is one line naming file, line and key;
the shipped example config has every key at its default."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fleetlog.analysis.config_file import ConfigError, KeyPath, key_lines
from fleetlog.analysis.remediation import (
    CircuitBreaker,
    Escalation,
    RemediationConfig,
)
from fleetlog.cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "remediation.toml"


def _load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "remediation.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        RemediationConfig.load(path)
    return str(caught.value).replace(str(path), "remediation.toml")


def test_an_unknown_key_names_its_line_and_the_key_meant(tmp_path: Path) -> None:
    text = ("# thresholds\n[escalation]\nreboot_after = 3\n\n"
            "[circuit_breaker]\nwindow_s = 600\nmax_drain_shar = 0.5\n")
    assert _load_error(tmp_path, text) == (
        "remediation.toml:7: unknown key 'max_drain_shar' in [circuit_breaker] "
        "(did you mean max_drain_share?)")


def test_a_misspelled_table_is_refused_not_ignored(tmp_path: Path) -> None:
    assert _load_error(tmp_path, "[circuit_breaker]\nmax_drain_share = 0.1\n\n[escalaton]\n"
                       "reboot_after = 1\n") == (
        "remediation.toml:4: unknown table [escalaton] (did you mean [escalation]?)")
    assert _load_error(tmp_path, "[[xid_treshold]]\nxid = 43\n") == (
        "remediation.toml:1: unknown table [[xid_treshold]] (did you mean [[xid_threshold]]?)")
    assert _load_error(tmp_path, "verbose = true\n") == (
        "remediation.toml:1: unknown key 'verbose' at the top level (known: escalation, "
        "circuit_breaker, actions, xid_threshold)")


@pytest.mark.parametrize(("text", "message"), [
    ('[escalation]\nreboot_after = "two"\n',
     "remediation.toml:2: 'reboot_after' in [escalation] must be an integer, not \"two\" "
     "(a string)"),
    ("[escalation]\nwindow_s = 60\nreboot_after = 2.5\n",
     "remediation.toml:3: 'reboot_after' in [escalation] must be an integer, not 2.5 (a number)"),
    ('[circuit_breaker]\nmax_drain_share = "5%"\n',
     "remediation.toml:2: 'max_drain_share' in [circuit_breaker] must be a number, not \"5%\" "
     "(a string)"),
    ("[circuit_breaker]\nmax_drain_share = true\n",
     "remediation.toml:2: 'max_drain_share' in [circuit_breaker] must be a number, not true "
     "(true or false)"),
    ("escalation = 3\n",
     "remediation.toml:1: 'escalation' must be a table [escalation], not 3 (an integer)"),
    ('[[xid_threshold]]\nxid = 43\ncount = 3\nwindow_s = 600\naction = "reset_gpu"\n'
     '[[xid_threshold]]\nxid = "13"\n',
     "remediation.toml:7: 'xid' in [[xid_threshold]] #2 must be an integer, not \"13\" "
     "(a string)"),
])
def test_a_wrong_type_names_line_key_and_both_types(tmp_path: Path, text: str,
                                                    message: str) -> None:
    assert _load_error(tmp_path, text) == message


def test_a_missing_key_and_a_bad_value_are_refused(tmp_path: Path) -> None:
    rule = '[[xid_threshold]]\nxid = 43\ncount = 3\nwindow_s = 600\naction = "reset_gpu"\n'
    assert _load_error(tmp_path, rule + "\n[[xid_threshold]]\nxid = 13\nwindow_s = 60\n"
                       'action = "restart_app"\n') == (
        "remediation.toml:7: missing key 'count' in [[xid_threshold]] #2")
    assert _load_error(tmp_path, rule.replace("reset_gpu", "rest_gpu")).startswith(
        "remediation.toml:5: [[xid_threshold]] #1: action 'rest_gpu' is none of fleetlog's: ")
    assert _load_error(tmp_path, "[circuit_breaker]\nwindow_s = 60\nmax_drain_share = 5\n") == (
        "remediation.toml:3: [circuit_breaker]: max_drain_share is a share of the fleet from 0 "
        "to 1, not 5")
    assert _load_error(tmp_path, "[escalation]\nrma_after = 0\n") == (
        "remediation.toml:2: [escalation]: rma_after must be more than 0, not 0")


def test_a_toml_syntax_error_and_a_missing_file_are_one_line(tmp_path: Path) -> None:
    assert _load_error(tmp_path, "[escalation]\nreboot_after = \n") == (
        "remediation.toml:2: invalid TOML: Invalid value")
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        RemediationConfig.load(tmp_path / "missing.toml")


def test_what_fits_the_schema_loads(tmp_path: Path) -> None:
    path = tmp_path / "remediation.toml"
    path.write_text('xid_threshold = []\n"escalation".reboot_after = 5\n'
                    "[circuit_breaker]\nwindow_s = 600\n")  # an integer is a number too
    config = RemediationConfig.load(path)
    assert config == RemediationConfig(escalation=Escalation(reboot_after=5),
                                       circuit_breaker=CircuitBreaker(window_s=600.0),
                                       xid_threshold=())
    assert isinstance(config.circuit_breaker.window_s, float)


def test_the_line_scan_follows_tables_arrays_and_dotted_keys() -> None:
    text = ('top = 1\n[a]\nx = """\ny = 2\n"""\n"quoted key" = 3\nb.c = 4\n'
            "[[t]]\nk = 1\n[[t]]\nk = 2  # comment\n[a.d]\ne = 5\n")
    assert key_lines(text) == {
        ("top",): 1, ("a",): 2, ("a", "x"): 3, ("a", "quoted key"): 6, ("a", "b"): 7,
        ("a", "b", "c"): 7, ("t",): 8, ("t", 0): 8, ("t", 0, "k"): 9, ("t", 1): 10,
        ("t", 1, "k"): 11, ("a", "d"): 12, ("a", "d", "e"): 13,
    }


def test_the_cli_prints_the_error_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "remediation.toml"
    config.write_text("[circuit_breaker]\nmax_drain_shar = 0.5\n")
    db = str(tmp_path / "fleet.duckdb")
    for args in (["recommend", "--db", db, "--remediation-config", str(config)],
                 ["act", "--db", db, "--remediation-config", str(config)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.stderr == (f"Error: {config}:2: unknown key 'max_drain_shar' in "
                                 "[circuit_breaker] (did you mean max_drain_share?)\n")


# ---- the shipped example ----

def _schema_paths(schema: Any, at: KeyPath = ()) -> list[KeyPath]:
    """Every key path a config of ``schema`` can have (an array of tables: its first entry)."""
    out: list[KeyPath] = []
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        kind = hints[spec.name]
        path = (*at, spec.name)
        out.append(path)
        if dataclasses.is_dataclass(kind):
            out += _schema_paths(kind, path)
        elif typing.get_origin(kind) is tuple and dataclasses.is_dataclass(
                typing.get_args(kind)[0]):
            out += _schema_paths(typing.get_args(kind)[0], (*path, 0))
    return out


def test_the_example_config_is_the_defaults() -> None:
    assert RemediationConfig.load(EXAMPLE) == RemediationConfig()


def test_the_example_config_has_every_key_with_a_comment() -> None:
    text = EXAMPLE.read_text("utf-8")
    lines = key_lines(text)
    paths = _schema_paths(RemediationConfig)
    assert ("xid_threshold", 0, "action") in paths and ("escalation", "rma_after") in paths
    assert [path for path in paths if path not in lines] == []
    # Each key is explained: a comment on its line or in the lines just above it.
    source = text.splitlines()
    for path in paths:
        number = lines[path]
        around = source[max(0, number - 4):number]
        assert any("#" in line for line in around), path

