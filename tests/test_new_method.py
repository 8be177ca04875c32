"""Adding a method is one new file: a throwaway method, written here into the methods folder as
a contributor would, trains through `train` and through a 2-trial study on a real Ray, its knob
validated, recorded in Parquet and refused for the other methods, with no other file touched."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import pytest

from trainables.config import ConfigError, knob_table, make_config
from trainables.sparsity.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
METHODS_DIR = ROOT / "trainables" / "sparsity" / "methods"

# A MEST-like rule (Yuan et al. 2021): drop by |w| + lambda |grad|, grow by |grad|.
METHOD_FILE = '''"""`{name}`: drop by |w| + {knob} * |grad|, grow by |grad| (a test's throwaway)."""

from trainables.registry import Knob
from trainables.sparsity.methods.base import METHODS, SCHEDULE, SPARSE, Method


@METHODS.register("{name}")
class Throwaway(Method):
    knobs = {{
        **SPARSE,
        **SCHEDULE,
        "{knob}": Knob(1.0, float, "weight of |grad| in the drop score", low=0.0),
    }}
    dynamic = True

    @property
    def dense_gradient(self):
        return True

    def drop_score(self, name, weight, training):
        grad = training.dense_gradient(weight).abs()
        return weight.detach().abs() + self.values["{knob}"] * grad

    def grow_score(self, name, weight, training):
        return training.dense_gradient(weight).abs()
'''


@pytest.fixture(scope="module")
def new_method():
    """The file in the methods folder (so Ray's workers import it too), imported here."""
    tag = uuid.uuid4().hex[:8]
    name, knob = f"throwaway_{tag}", f"throwaway_lambda_{tag}"
    path = METHODS_DIR / f"{name}.py"
    path.write_text(METHOD_FILE.format(name=name, knob=knob))
    module = f"trainables.sparsity.methods.{name}"
    try:
        importlib.import_module(module)
        yield name, knob
    finally:
        path.unlink(missing_ok=True)
        METHODS.remove(name)
        sys.modules.pop(module, None)


def test_new_method_trains_reads_its_knob_and_is_refused_elsewhere(new_method):
    from trainables.datasets import load_dataset
    from trainables.train import Trainer

    name, knob = new_method
    assert knob_table()[knob].readers == (("method", name),)
    digits = load_dataset("digits")
    results = {}
    for value in (0.0, 123.0):
        config = make_config(
            {"method": name, "sparsity": 0.8, knob: value, "epochs": 2, "update_interval": 5,
             "depth": 1, "width": 32, "device": "cpu"}
        )  # fmt: skip
        trainer = Trainer(config, digits)
        assert trainer.method.values[knob] == value  # trained with what was set
        while not trainer.finished:
            metrics = trainer.run_epoch()
        assert metrics["density"] == pytest.approx(0.2, abs=0.01)
        results[value] = [m.clone() for m in trainer.sparse.masks.values()]
    assert any((a != b).any() for a, b in zip(results[0.0], results[123.0], strict=True))
    refused = rf"{knob}=123(\.0)? is read only by method {name}, not by the chosen method=rigl"
    with pytest.raises(ConfigError, match=refused):
        make_config({"method": "rigl", knob: 123})
    with pytest.raises(ConfigError, match=rf"{knob}=-1 is out of range"):
        make_config({"method": name, knob: -1})


@pytest.mark.ray
def test_new_method_runs_a_two_trial_study(new_method, local_ray, tmp_path):
    from results.parquet import read_table
    from tuner.spec import load_spec
    from tuner.study import run_study

    name, knob = new_method
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={tmp_path}", "name=new_method", "trials=2", "fixed.epochs=1",
         f"fixed.method={name}", f"fixed.{knob}=0.5", "search.population_size=2"],
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 2
    assert (trials["status"] == "completed").all(), trials.get("error")
    assert (trials["config/method"] == name).all()
    assert (trials[f"config/{knob}"] == 0.5).all()
    # the space's `when` lists set and rigl: the default it trained with is what is recorded
    assert (trials["config/update_interval"] == 100).all()
    assert ((trials["density"] - (1 - trials["config/sparsity"])).abs() < 0.02).all()
