"""One installed name: fleetlog installs as ``fleetlog`` alone, and nothing in the user's
working directory can stand in for one of its stages."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("ingest", "generators", "analysis", "act", "cli")


def test_the_distribution_has_one_top_level_name() -> None:
    top_level = importlib.metadata.distribution("fleetlog").read_text("top_level.txt") or ""
    assert top_level.split() == ["fleetlog"]


def test_the_packages_setuptools_finds_are_all_under_fleetlog() -> None:
    # The same rule as pyproject.toml's [tool.setuptools.packages.find].
    packages = setuptools.find_packages(str(ROOT), include=["fleetlog", "fleetlog.*"])
    assert all(p == "fleetlog" or p.startswith("fleetlog.") for p in packages)
    assert {f"fleetlog.{stage}" for stage in STAGES} <= set(packages)
    assert {"fleetlog.ingest.contract", "fleetlog.ingest.store", "fleetlog.ingest.kafka",
            "fleetlog.ingest.readers"} <= set(packages)


def test_each_stage_folder_is_the_package_of_its_installed_name() -> None:
    for stage in STAGES:
        link = ROOT / "fleetlog" / stage
        assert link.is_symlink() and link.resolve() == (ROOT / stage).resolve()


def test_no_module_imports_a_stage_by_its_bare_folder_name() -> None:
    bare = tuple(f"{verb} {stage}" for verb in ("from", "import") for stage in STAGES)
    offenders = []
    for folder in (*STAGES, "fleetlog", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if "fleetlog" in path.relative_to(ROOT).parts[1:]:
                continue  # the links inside fleetlog/ repeat the stage folders
            for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(bare) and stripped.split()[1].split(".")[0] in STAGES:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert offenders == []


@pytest.mark.slow
def test_folders_named_like_the_stages_in_the_working_directory_shadow_nothing(
        tmp_path: Path) -> None:
    for stage in STAGES:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "__init__.py").write_text(
            f"raise SystemExit('the {stage}/ folder of the working directory was imported')\n")
    for command in ([sys.executable, "-m", "fleetlog", "--version"],
                    [str(Path(sys.executable).with_name("fleetlog")), "sql", "--help"]):
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "working directory was imported" not in done.stdout + done.stderr
    version = subprocess.run([sys.executable, "-m", "fleetlog", "--version"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=True)
    assert version.stdout.startswith("fleetlog, version ")
