"""scripts/setup.sh picks the ROS 2 distro and refuses a venv of another one, in one line, before any work."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup.sh"
pytestmark = pytest.mark.skipif(not SETUP.is_file(), reason="scripts/ is not part of this checkout")


def run_setup(venv: Path, distro: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROS_DISTRO"}
    env["TOPREWARD_VENV"] = str(venv)
    if distro is not None:
        env["ROS_DISTRO"] = distro
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("held", "asked"), [("kilted", None), ("kilted", "jazzy"), ("jazzy", "kilted")])
def test_a_venv_of_another_distro_is_refused_in_one_line(tmp_path, held, asked):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "ros_distro").write_text(held + "\n")
    result = run_setup(venv, asked)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"holds ROS 2 {held}, not ROS_DISTRO={asked or 'jazzy'}" in lines[0]
    assert sorted(p.name for p in venv.iterdir()) == ["ros_distro"]  # nothing was installed or rebuilt


def test_an_unsupported_distro_is_refused_in_one_line(tmp_path):
    result = run_setup(tmp_path / "venv", "humble")
    assert result.returncode == 2
    assert result.stderr.strip() == ("[setup] ROS_DISTRO=humble is not supported by this setup: "
                                     "use jazzy (the default) or kilted")
    assert not (tmp_path / "venv").exists()
