"""A bad spec fails before Ray starts, naming the field and the allowed values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuner.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "studies" / "default.yaml"


def write_spec(tmp_path: Path, **changes) -> Path:
    body = yaml.safe_load(DEFAULT.read_text())
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_default_spec_is_valid():
    spec = load_spec(DEFAULT)
    assert spec.name == "default" and spec.trials >= 24
    assert spec.objectives == {"val_error": "min", "train_flops": "min", "inference_flops": "min"}
    assert spec.search.algorithm == "nsga2" and spec.max_concurrent < spec.search.population_size


def test_overrides_reach_nested_fields():
    spec = load_spec(DEFAULT, ["trials=5", "fixed.epochs=2", "search.population_size=4"])
    assert (spec.trials, spec.fixed["epochs"], spec.search.population_size) == (5, 2, 4)
    assert "trials: 5" in spec.source  # the spec kept with the results is the overridden one


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["colour=blue"], ["unknown key 'colour'", "allowed:"]),
        (["trails=8"], ["unknown key 'trails'", "did you mean 'trials'"]),
        (["sparsity=0.5"], ["unknown key 'sparsity'", "fixed:"]),
        (["dataset=imagenet"], ["dataset='imagenet'", "allowed values", "digits"]),
        (["fixed.sparsity=1.5"], ["sparsity=1.5", "out of range", "[0, 1)"]),
        (["fixed.method=magic"], ["method='magic'", "dense", "rigl"]),
        (["objectives={}"], ["objectives is required", "val_error: min"]),
        (["objectives={val_error: lowest}"], ["objectives.val_error='lowest'", "min, max"]),
        (["objectives={accuracy: max}"], ["unknown key 'objectives.accuracy'", "val_accuracy"]),
        (["search.algorithm=smac"], ["search.algorithm='smac'", "nsga2"]),
        (["trials=0"], ["trials=0", ">= 1"]),
        (["resources.gpu=-1"], ["resources.gpu=-1"]),
        (["space=nope"], ["space='nope'", "mlp"]),
        (["kind=replay"], ["kind='replay'", "optimize"]),
    ],
)
def test_bad_spec_names_field_and_fix(overrides, expected):
    with pytest.raises(SpecError) as err:
        load_spec(DEFAULT, overrides)
    for text in expected:
        assert text in str(err.value)


def test_bad_space_bound_is_refused(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("parameters:\n  sparsity: {type: float, low: 0.0, high: 1.5}\n")
    with pytest.raises(SpecError, match=r"sparsity=1.5 is out of range"):
        load_spec(write_spec(tmp_path, space=str(space)))


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["fixed.sparsity=1.5"], "sparsity=1.5"),
        (["colour=blue"], "colour"),
        (["dataset=imagenet"], "dataset"),
        (["objectives={}"], "objectives"),
    ],
)
def test_cli_exits_nonzero_before_ray(overrides, field, tmp_path):
    cmd = [sys.executable, str(ROOT / "run_study.py"), "run", str(DEFAULT)]
    for o in overrides + [f"storage={tmp_path}"]:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert field in proc.stderr and proc.stderr.startswith("error:")
    assert "Traceback" not in proc.stderr
    assert "Started a local Ray" not in proc.stderr + proc.stdout  # refused before Ray
    assert not (tmp_path / "default").exists()
