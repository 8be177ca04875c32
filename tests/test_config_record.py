"""What a trial trained with is what Parquet records: every knob of the chosen components,
defaults included, and re-evaluation rebuilds configs from those columns, not from today's
defaults. On a real local Ray, with a tiny study on digits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from results.parquet import read_table
from trainables.config import FIELDS, make_config
from trainables.optimizers import SGD
from tuner.kinds import reevaluate_configs
from tuner.spec import load_spec
from tuner.study import run_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray

# A space that searches the optimizer and the schedule: their knobs are active only in the
# trials that drew a component reading them (no `when:` needed; derived from the registries).
SPACE = """
parameters:
  optimizer:   {type: categorical, choices: [sgd, adam]}
  lr_schedule: {type: categorical, choices: [cosine, step]}
  momentum:    {type: float, low: 0.5, high: 0.95}
  gamma:       {type: float, low: 0.1, high: 0.5}
  lr:          {type: float, low: 1.0e-3, high: 0.1, log: true}
"""


@pytest.fixture(scope="module")
def recorded_study(local_ray, tmp_path_factory):
    storage = tmp_path_factory.mktemp("record")
    space = storage / "optimizers.yaml"
    space.write_text(SPACE)
    spec = load_spec(
        ROOT / "studies" / "random.yaml",
        [f"storage={storage}", "name=record", f"space={space}", "trials=4",
         "fixed={epochs: 1, width: 16}"],
    )  # fmt: skip
    result = run_study(spec)
    return read_table(result.study_dir / "trials.parquet"), storage


def test_parquet_holds_every_knob_each_trial_used(recorded_study):
    trials, _ = recorded_study
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert set(trials["config/optimizer"]) == {"sgd", "adam"}  # the LHS strata cover both
    # knobs nobody set (defaults) are recorded for every trial
    for knob in ("batch_size", "depth", "weight_decay", "seed", "label_smoothing", "epochs"):
        assert trials[f"config/{knob}"].notna().all(), knob
    assert (trials["config/batch_size"] == FIELDS["batch_size"].default).all()
    assert (trials["config/width"] == 16).all()
    # each optimizer's own knobs, only in its trials
    sgd = trials[trials["config/optimizer"] == "sgd"]
    adam = trials[trials["config/optimizer"] == "adam"]
    assert sgd["config/momentum"].between(0.5, 0.95).all() and sgd["config/nesterov"].all()
    assert sgd["config/beta1"].isna().all() and adam["config/momentum"].isna().all()
    assert (adam["config/beta1"] == 0.9).all() and (adam["config/eps"] == 1e-8).all()
    step = trials[trials["config/lr_schedule"] == "step"]
    cosine = trials[trials["config/lr_schedule"] == "cosine"]
    assert len(step) and step["config/gamma"].between(0.1, 0.5).all()
    assert all(list(m) == [0.5, 0.75] for m in step["config/milestones"])  # a list knob
    assert cosine["config/gamma"].isna().all()


def test_reevaluation_rebuilds_the_recorded_configs_after_a_default_changes(
    recorded_study, monkeypatch
):
    trials, storage = recorded_study
    spec = load_spec(
        ROOT / "studies" / "reevaluate.yaml",
        [f"storage={storage}", "from=[record]", "layers=3", "seeds=[1]"],
    )
    before = reevaluate_configs(spec)
    assert before and all("batch_size" in c for c in before)
    # change defaults in code: a component's knob and a general one
    momentum = dataclasses.replace(SGD.knobs["momentum"], default=0.3)
    monkeypatch.setitem(SGD.knobs, "momentum", momentum)
    monkeypatch.setitem(FIELDS, "batch_size", dataclasses.replace(FIELDS["batch_size"], default=8))
    assert make_config({})["momentum"] == 0.3 and make_config({})["batch_size"] == 8
    after = reevaluate_configs(spec)
    assert after == before
    # resolved again, they train with the recorded values, not the new defaults
    recorded = trials.set_index("config/lr")
    for config in after:
        resolved = make_config(config)
        assert resolved["batch_size"] == 64
        row = recorded.loc[config["lr"]]
        if resolved["optimizer"] == "sgd":
            assert resolved["momentum"] == pytest.approx(row["config/momentum"]) != 0.3
        else:
            assert "momentum" not in resolved and not pd.isna(row["config/beta1"])
