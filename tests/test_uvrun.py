"""./uvrun on machines that cannot go on: one line saying what to do, exit code 2.

The working cases (uv on PATH; uv bootstrapped with pip into .uv-bootstrap under an empty
HOME and a PATH without uv) are what `.ci/run` does on every submission, from a clean clone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_uvrun(tmp_path: Path, path: str) -> subprocess.CompletedProcess:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "uvrun", project / "uvrun")
    (project / "uv.lock").write_text("")
    return subprocess.run(
        ["/bin/sh", str(project / "uvrun"), "python", "-c", "pass"],
        env={"HOME": str(tmp_path / "home"), "PATH": path},
        cwd=tmp_path,  # not the repository, whose own .uv-bootstrap must not be found
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_python_says_what_to_install(tmp_path: Path):
    done = run_uvrun(tmp_path, str(tmp_path / "empty-bin"))
    assert done.returncode == 2
    assert "uvrun: no python3 on PATH, and no uv." in done.stderr
    assert "Install Python 3.11+ with pip" in done.stderr


def test_a_python_without_pip_says_what_to_install(tmp_path: Path):
    venv = tmp_path / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = run_uvrun(tmp_path, f"{venv / 'bin'}:/bin")
    assert done.returncode == 2, done.stderr
    assert "has no pip, and uv is not installed" in done.stderr
    assert "apt install python3-pip" in done.stderr
    assert not (tmp_path / "project" / ".venv").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", ["uvrun", ".ci/run"])
def test_scripts_are_posix_sh_and_shellcheck_clean(script: str):
    done = subprocess.run(
        ["shellcheck", "-s", "sh", str(ROOT / script)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
