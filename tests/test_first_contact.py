"""First contact: the command line answers at once where it can.

A spec is validated, `--help` printed and a study's Parquet queried without importing torch
(seconds) or Ray. Each check runs in a fresh interpreter: this test process has long since
imported both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainables import catalog
from trainables.config import ConfigError, make_config

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "optuna", "torchvision", "sklearn")


def imported_after(code: str, cwd: Path = ROOT) -> dict:
    """Run `code` in a fresh interpreter; return its exit code, output and heavy imports."""
    probe = "\n".join(
        [
            "import json, sys",
            "code = 0",
            "try:",
            textwrap.indent(textwrap.dedent(code).strip(), "    "),
            "except SystemExit as exit_:",
            "    code = exit_.code",
            f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)",
            "sys.stderr.write('\\nPROBE ' + json.dumps({'code': code, 'heavy': heavy}) + '\\n')",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("PROBE ")][-1]
    return {**json.loads(line.removeprefix("PROBE ")), "out": done.stdout, "err": done.stderr}


def test_validating_every_ready_spec_imports_neither_torch_nor_ray():
    # a custom trainable is imported to check it exists: its own imports are its own
    specs = sorted(
        str(p) for p in (ROOT / "studies").glob("*.yaml") if "trainable:" not in p.read_text()
    )
    assert len(specs) >= 5
    result = imported_after(
        f"""
        from tuner.spec import load_spec
        for path in {specs!r}:
            load_spec(path)
        """
    )
    assert result["code"] in (0, None), result["err"]
    assert result["heavy"] == [], f"validating a spec imported {result['heavy']}"


def test_a_spec_with_an_unknown_key_exits_2_without_torch_or_ray(tmp_path: Path):
    spec = tmp_path / "typo.yaml"
    spec.write_text("name: typo\ntrials: 4\nobjectives: {val_error: min}\ntrails: 8\n")
    result = imported_after(
        f"""
        import run_study
        code = run_study.main(["run", {str(spec)!r}])
        """
    )
    assert result["code"] == 2
    assert "unknown key 'trails'; did you mean 'trials'?" in result["err"]
    assert result["heavy"] == []


def test_a_bad_value_in_a_spec_is_refused_without_torch(tmp_path: Path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\ntrials: 4\nobjectives: {val_error: min}\nfixed: {method: rigll}\n")
    result = imported_after(
        f"""
        import run_study
        code = run_study.main(["run", {str(spec)!r}])
        """
    )
    assert result["code"] == 2
    assert "method='rigll'" in result["err"] and "did you mean 'rigl'?" in result["err"]
    assert result["heavy"] == []


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["query", "--help"]])
def test_help_imports_neither_torch_nor_ray(argv):
    result = imported_after(f"import run_study\nrun_study.main({argv!r})")
    assert result["code"] == 0 and "usage: run_study.py" in result["out"]
    assert result["heavy"] == []


def test_query_and_pareto_answer_without_torch_or_ray(tmp_path: Path):
    from tests.test_query_report import OBJECTIVES, optimize_trials, write_study

    write_study(tmp_path, "synth", optimize_trials(), OBJECTIVES)
    for argv in (
        ["query", "synth", "SELECT count(*) AS n FROM trials", "--storage", str(tmp_path)],
        ["pareto", "synth", "--storage", str(tmp_path)],
    ):
        result = imported_after(f"import run_study\ncode = run_study.main({argv!r})")
        assert result["code"] == 0, result["err"]
        assert result["heavy"] == [], f"{argv[0]} imported {result['heavy']}"
    assert (
        "24"
        in imported_after(
            "import run_study\n"
            f"run_study.main(['query', 'synth', 'SELECT count(*) AS n FROM trials', "
            f"'--storage', {str(tmp_path)!r}])"
        )["out"]
    )


@pytest.mark.parametrize("field", sorted(catalog.REGISTRIES))
def test_catalog_names_are_the_registries_keys(field):
    """The torch-free names the validator uses are exactly what is registered."""
    import importlib

    module, attribute, names = catalog.REGISTRIES[field]
    registry = getattr(importlib.import_module(module), attribute)
    assert tuple(registry) == names


def test_n_m_pattern_sets_the_sparsity_it_implies():
    config = make_config({"method": "rigl", "pattern": "n:m", "nm_n": 1, "nm_m": 4})
    assert config["sparsity"] == pytest.approx(0.75)
    assert make_config({"method": "set", "pattern": "n:m"})["sparsity"] == pytest.approx(0.5)
    # a consistent sparsity is accepted, a contradicting one refused with the fix
    assert make_config({"method": "rigl", "pattern": "n:m", "sparsity": 0.5})["sparsity"] == 0.5
    with pytest.raises(ConfigError, match=r"sparsity=0\.9 contradicts pattern n:m \(2:4\).*0\.5"):
        make_config({"method": "rigl", "pattern": "n:m", "sparsity": 0.9})
    with pytest.raises(ConfigError, match="nm_n must be below nm_m"):
        make_config({"method": "rigl", "pattern": "n:m", "nm_n": 4, "nm_m": 4})
    # dense reads no pattern: refused by name, naming the methods that read it
    with pytest.raises(ConfigError, match=r"pattern='n:m' is read only by method static"):
        make_config({"method": "dense", "pattern": "n:m"})


def test_n_m_pattern_trains_without_a_sparsity():
    from trainables.train import Trainer

    trainer = Trainer(make_config({"method": "rigl", "pattern": "n:m", "epochs": 1}))
    metrics = trainer.run_epoch()
    assert metrics["density"] == pytest.approx(0.5, abs=0.02)


def test_a_home_that_cannot_hold_rays_token_gets_a_private_one(tmp_path: Path, monkeypatch):
    """Ray writes a new local cluster's token to ~/.ray; a read-only HOME would be a traceback."""
    from tuner.cluster import local_token_path

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # writable: Ray's own place is used
    assert local_token_path() is None
    blocked = tmp_path / "home-is-a-file"
    blocked.write_text("")  # ~/.ray cannot be made under it, as under a read-only HOME
    monkeypatch.setenv("HOME", str(blocked))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = local_token_path()
    assert path is not None and path.parent.stat().st_mode & 0o777 == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert local_token_path().read_text() == token  # kept, not regenerated
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/elsewhere/token")  # the user's choice wins
    assert local_token_path() is None
