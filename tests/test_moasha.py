"""MO-ASHA: promotion decisions against a brute-force ranking, state that survives a restart,
the spec's `scheduler:` section, and Optuna's samplers told about stopped trials.

Pure unit tests: no Ray cluster (the studies on a real Ray are in tests/test_moasha_e2e.py).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import optuna
import pytest

from tuner.schedulers import (
    CONTINUE,
    DECISIONS_FILE,
    STATE_FILE,
    STOP,
    MOASHAScheduler,
    forget_unknown_trials,
    promotes,
    result_epoch,
    rung_levels,
)
from tuner.spec import SpecError, parse_spec

OBJECTIVES = {"val_error": "min", "train_flops": "min"}


# -- a brute-force ranking, written from the definitions ---------------------------------------
def brute_force_layers(points: list[tuple[float, ...]]) -> list[int]:
    """Layer of each point: peel the non-dominated set again and again (pairwise checks)."""
    layers = [0] * len(points)
    left = set(range(len(points)))
    layer = 0
    while left:
        layer += 1
        front = {
            i
            for i in left
            if not any(
                all(a <= b for a, b in zip(points[j], points[i], strict=True))
                and any(a < b for a, b in zip(points[j], points[i], strict=True))
                for j in left
            )
        }
        for i in front:
            layers[i] = layer
        left -= front
    return layers


def brute_force_order(points: list[tuple[float, ...]]) -> list[int]:
    """Layer first; inside a layer: the epsilon-net over objectives scaled to [0, 1] over all
    points, seeded at the best first objective, ties to the earlier arrival."""
    dims = len(points[0])
    low = [min(p[d] for p in points) for d in range(dims)]
    high = [max(p[d] for p in points) for d in range(dims)]
    span = [high[d] - low[d] if high[d] > low[d] else 1.0 for d in range(dims)]
    scaled = [tuple((p[d] - low[d]) / span[d] for d in range(dims)) for p in points]
    layers = brute_force_layers(points)
    order: list[int] = []
    for layer in sorted(set(layers)):
        members = [i for i in range(len(points)) if layers[i] == layer]
        chosen = [min(members, key=lambda i: (points[i][0], i))]
        while len(chosen) < len(members):
            rest = [i for i in members if i not in chosen]
            distance = {
                i: round(min(math.dist(scaled[i], scaled[c]) for c in chosen), 9) for i in rest
            }
            chosen.append(max(rest, key=lambda i: (distance[i], -i)))
        order += chosen
    return order


def brute_force_continues(points: list[tuple[float, ...]], rf: float) -> bool:
    return len(points) <= 1 or brute_force_order(points).index(len(points) - 1) < len(points) / rf


# -- promotion decisions -------------------------------------------------------------------------
def test_hand_made_rung_table():
    """Five trials arrive at one rung (rf=3); each decision worked out by hand."""
    scheduler = MOASHAScheduler(OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    arrivals = [
        ("a", 0.10, 5.0, CONTINUE),  # first at the rung
        ("b", 0.20, 6.0, STOP),  # dominated by a: position 1 of 2, not < 2/3
        ("c", 0.05, 10.0, CONTINUE),  # layer 1 with a; the net starts at the best val_error
        ("d", 0.30, 1.0, CONTINUE),  # layer 1; farthest from c: position 1 < 4/3
        ("e", 0.15, 5.5, STOP),  # dominated by a: layer 2, position >= 3 of 5
        ("f", 0.12, 4.0, STOP),  # layer 1 of 4, but the net takes c, d first: position 2 >= 6/3
    ]
    for trial_id, error, flops, expected in arrivals:
        result = {"epoch": 1, "val_error": error, "train_flops": flops}
        assert scheduler.decide(trial_id, result) == expected, trial_id
    assert scheduler.num_stopped == 3
    assert set(scheduler.rungs[1]) == set("abcdef") and scheduler.rungs[3] == {}


@pytest.mark.parametrize("rf", [2, 3, 4])
@pytest.mark.parametrize("dims", [2, 3])
def test_decisions_match_brute_force_on_random_rung_tables(rf, dims):
    """Every arrival at rungs of random tables (with ties and duplicates) decides as the brute
    force does."""
    rng = np.random.default_rng(100 * rf + dims)
    checked = straddling = 0
    for _ in range(40):
        n = int(rng.integers(2, 14))
        # few distinct values per objective: ties and duplicate points are common
        points = [tuple(float(v) for v in rng.integers(0, 5, size=dims)) for _ in range(n)]
        for k in range(1, n + 1):
            prefix = points[:k]
            expected = brute_force_continues(prefix, rf)
            assert promotes(np.array(prefix), rf) == expected, (prefix, rf)
            layers = brute_force_layers(prefix)
            mine = layers[-1]
            better = sum(layer < mine for layer in layers)
            same = sum(layer == mine for layer in layers)
            if better < k / rf <= better + same - 1:
                straddling += 1  # decided by the tie rule
            checked += 1
    assert checked > 200 and straddling > 10  # the tie rule was exercised, not just layers


def test_layers_decide_before_the_tie_rule():
    """Whatever the tie rule: a trial whose whole layer fits in the top 1/rf continues, and one
    with at least n/rf trials in better layers stops."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, rf = int(rng.integers(2, 12)), float(rng.choice([2, 3, 4]))
        points = [tuple(float(v) for v in rng.random(3).round(1)) for _ in range(n)]
        layers = brute_force_layers(points)
        better = sum(layer < layers[-1] for layer in layers)
        at_most = sum(layer <= layers[-1] for layer in layers)
        decision = promotes(np.array(points), rf)
        if better >= n / rf:
            assert not decision
        if at_most - 1 < n / rf:
            assert decision


def test_constraints_rank_feasible_trials_first():
    """Deb's rule at a rung: an infeasible trial that the plain ranking would promote (it is
    the cheapest) stops; against the brute force on random tables with violations."""
    plain = MOASHAScheduler(OBJECTIVES, max_t=9)
    constrained = MOASHAScheduler(OBJECTIVES, max_t=9, constraints=[("val_error", "<=", 0.5)])
    for trial_id, error, flops in [("a", 0.3, 10.0), ("b", 0.35, 9.0), ("c", 0.4, 8.0)]:
        for scheduler in (plain, constrained):
            scheduler.decide(trial_id, {"epoch": 1, "val_error": error, "train_flops": flops})
    cheapest = {"epoch": 1, "val_error": 0.9, "train_flops": 0.1}
    assert plain.decide("d", cheapest) == CONTINUE  # on layer 1, far from the others
    assert constrained.decide("d", cheapest) == STOP  # infeasible: after every feasible trial
    assert constrained.rungs[1]["d"]["violation"] == pytest.approx(0.4)

    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(2, 10))
        points = [tuple(float(v) for v in rng.integers(0, 4, size=2)) for _ in range(n)]
        violations = np.where(rng.random(n) < 0.4, rng.integers(1, 3, n), 0).astype(float)
        feasible = [i for i in range(n) if violations[i] == 0]
        order = (
            [feasible[i] for i in brute_force_order([points[i] for i in feasible])]
            if (feasible)
            else []
        )
        order += sorted(
            (i for i in range(n) if violations[i] > 0), key=lambda i: (violations[i], i)
        )
        expected = n == 1 or order.index(n - 1) < n / 3
        assert promotes(np.array(points), 3, violations) == expected


def test_max_objectives_are_negated():
    scheduler = MOASHAScheduler({"val_accuracy": "max", "train_flops": "min"}, max_t=9)
    assert scheduler.decide("a", {"epoch": 1, "val_accuracy": 0.9, "train_flops": 5}) == CONTINUE
    # worse accuracy and more flops: dominated
    assert scheduler.decide("b", {"epoch": 1, "val_accuracy": 0.8, "train_flops": 6}) == STOP
    # better accuracy: continues (it would stop if accuracy were minimized)
    assert scheduler.decide("c", {"epoch": 1, "val_accuracy": 0.99, "train_flops": 7}) == CONTINUE


def test_rungs_epochs_and_the_full_budget():
    assert rung_levels(1, 3, 9) == [1, 3]
    assert rung_levels(1, 3, 27) == [1, 3, 9]
    assert rung_levels(2, 2, 16) == [2, 4, 8]
    assert rung_levels(1, 1.5, 4) == [1, 2, 3]  # rounded, each level once
    assert result_epoch({"epoch": 3, "training_iteration": 5}) == 3
    assert result_epoch({"training_iteration": 5}) == 5  # a custom trainable without epoch
    scheduler = MOASHAScheduler(OBJECTIVES, max_t=9)
    first = {"val_error": 0.1, "train_flops": 1.0}
    assert scheduler.decide("a", {"epoch": 9, **first}) == STOP  # full budget: done
    assert all(rung == {} for rung in scheduler.rungs.values())  # ... and not a rung decision
    # a report that skips a rung (epoch 4 past rung 3) is ranked at the highest rung reached
    scheduler.decide("b", {"training_iteration": 4, **first})
    assert "b" in scheduler.rungs[3] and "b" not in scheduler.rungs[1]


def test_a_repeated_rung_report_gets_the_first_decision_and_counts_once():
    scheduler = MOASHAScheduler(OBJECTIVES, max_t=9)
    scheduler.decide("a", {"epoch": 1, "val_error": 0.1, "train_flops": 1.0})
    assert scheduler.decide("b", {"epoch": 1, "val_error": 0.5, "train_flops": 9.0}) == STOP
    # b restarted from scratch reports rung 1 again, now with values that would win: the
    # decision taken the first time holds and the rung still has two trials
    assert scheduler.decide("b", {"epoch": 1, "val_error": 0.0, "train_flops": 0.0}) == STOP
    assert len(scheduler.rungs[1]) == 2 and scheduler.num_stopped == 1
    assert scheduler.decide("a", {"epoch": 2, "val_error": 0.1, "train_flops": 2.0}) == CONTINUE


def test_non_finite_objectives_stop_and_are_not_ranked():
    scheduler = MOASHAScheduler(OBJECTIVES, max_t=9)
    assert scheduler.decide("a", {"epoch": 1, "val_error": math.nan, "train_flops": 1}) == STOP
    assert scheduler.rungs[1]["a"]["values"] is None
    # the next trial is ranked alone: first real point at the rung continues
    assert scheduler.decide("b", {"epoch": 1, "val_error": 0.9, "train_flops": 9}) == CONTINUE
    # a result without the objectives is not ranked (and not stopped)
    assert scheduler.decide("c", {"epoch": 1, "val_error": 0.2}) == CONTINUE
    assert "c" not in scheduler.rungs[1]


# -- state that survives the driver ----------------------------------------------------------
def test_rung_records_are_written_through_and_read_back(tmp_path):
    scheduler = MOASHAScheduler(OBJECTIVES, max_t=9, state_dir=tmp_path)
    rng = np.random.default_rng(0)
    decisions = {}
    for i in range(8):
        values = {"val_error": float(rng.random()), "train_flops": float(rng.random())}
        decisions[f"t{i}"] = scheduler.decide(f"t{i}", {"epoch": 1, **values})
    log = [json.loads(line) for line in (tmp_path / DECISIONS_FILE).read_text().splitlines()]
    assert [e["trial_id"] for e in log] == list(decisions) and len(log) == 8

    # what Tune pickles with the Tuner carries no stale records; the file is read back
    import pickle

    restored = pickle.loads(pickle.dumps(scheduler))
    assert restored.rungs[1] == {}
    assert (
        restored.decide("t3", {"epoch": 1, "val_error": 0.0, "train_flops": 0.0})
        == (decisions["t3"])
    )
    assert restored.rungs == scheduler.rungs and restored.num_stopped == scheduler.num_stopped
    log = [json.loads(line) for line in (tmp_path / DECISIONS_FILE).read_text().splitlines()]
    assert len(log) == 9 and log[-1]["trial_id"] == "t3" and log[-1]["replayed"]
    assert not any(e["replayed"] for e in log[:-1])  # nothing re-decided

    # trials Tune's saved state doesn't know are forgotten; a new scheduler starts fresh
    assert forget_unknown_trials(tmp_path, {"t0", "t1"}) == 6
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert set(state["rungs"]["1"]) == {"t0", "t1"}
    assert state["num_stopped"] == sum(decisions[t] == STOP for t in ("t0", "t1"))
    MOASHAScheduler(OBJECTIVES, max_t=9, state_dir=tmp_path, fresh=True)
    assert not (tmp_path / STATE_FILE).exists()


def test_state_from_other_rungs_is_refused(tmp_path):
    MOASHAScheduler(OBJECTIVES, max_t=9, state_dir=tmp_path).decide(
        "a", {"epoch": 1, "val_error": 0.1, "train_flops": 1}
    )
    changed = MOASHAScheduler(OBJECTIVES, max_t=27, state_dir=tmp_path, fresh=False)
    with pytest.raises(ValueError, match="rungs"):
        changed.decide("b", {"epoch": 1, "val_error": 0.1, "train_flops": 1})


# -- the spec -----------------------------------------------------------------------------------
def spec_body(**scheduler):
    return {
        "name": "s",
        "trials": 4,
        "objectives": {"val_error": "min", "train_flops": "min"},
        "fixed": {"epochs": 9},
        "scheduler": {"algorithm": "moasha", **scheduler},
    }


def test_scheduler_defaults_and_max_t_from_epochs():
    spec = parse_spec(spec_body())
    assert spec.scheduler.max_t == 9 and spec.scheduler.reduction_factor == 3
    assert parse_spec({**spec_body(), "scheduler": None}).scheduler.algorithm == "fifo"


@pytest.mark.parametrize(
    "scheduler, fixed, kind, message",
    [
        ({"algorithm": "hyperband"}, None, None, "scheduler.algorithm='hyperband': allowed"),
        ({"max_t": 5}, None, None, "scheduler.max_t=5 but every trial trains epochs=9"),
        ({"grace_period": 9}, None, None, "scheduler.grace_period=9 >= max_t=9"),
        ({"reduction_factor": 1}, None, None, "scheduler.reduction_factor=1: expected a number"),
        ({"grace_period": 0}, None, None, "scheduler.grace_period=0: expected a whole number"),
        ({"rungs": 3}, None, None, "unknown key 'scheduler.rungs'"),
        ({}, {"epochs": "many"}, None, "epochs"),
        ({}, None, "reproduction", "early stopping is for the optimize and random kinds"),
    ],
)
def test_bad_scheduler_refused_in_one_line(scheduler, fixed, kind, message):
    body = spec_body(**scheduler)
    if fixed is not None:
        body["fixed"] = fixed
    if kind is not None:
        body = {**body, "kind": kind}
        body.pop("trials")
    with pytest.raises(SpecError) as error:
        parse_spec(body)
    assert message in str(error.value) and "\n" not in str(error.value)


# -- Optuna's samplers told about stopped trials ------------------------------------------------
@pytest.mark.parametrize("algorithm", ["nsga2", "tpe", "gp"])
def test_samplers_accept_stopped_trials_and_nsga2_never_picks_them(algorithm):
    """Through the study's own searcher (no Ray cluster): most trials are stopped early and told
    PRUNED; each sampler keeps proposing past its startup phase; NSGA-II's parents are all
    full-budget trials."""
    from ray.tune.search.sample import Float

    from tuner.searchers import create_optuna_searcher
    from tuner.spec import SearchConfig

    search = SearchConfig(algorithm=algorithm, population_size=4, constraints=["train_flops <= 8"])
    searcher = create_optuna_searcher(search, OBJECTIVES, seed=3, budget=9)
    space = {"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)}
    searcher.set_search_properties(None, None, space)
    rng = np.random.default_rng(0)
    n = 30 if algorithm != "gp" else 16  # GP fits a model per trial: keep it short
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        assert config is not None and set(config) == {"x", "y"}
        epoch = 9 if i % 3 == 0 else int(rng.choice([1, 3]))  # two of three stop early
        result = {
            "epoch": epoch,
            "val_error": (config["x"] - 0.3) ** 2 + 0.1 / epoch,
            "train_flops": epoch * (1 + config["y"]),
        }
        searcher.on_trial_complete(f"t{i}", result)
    study = searcher.optuna_study
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == sum(i % 3 != 0 for i in range(n))
    assert states.count(optuna.trial.TrialState.COMPLETE) == sum(i % 3 == 0 for i in range(n))
    assert optuna.trial.TrialState.RUNNING not in states
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.values is None for t in pruned)  # partial values are never final
    if algorithm == "nsga2":
        complete_ids = {
            t._trial_id for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
        }
        attrs = study._storage.get_study_system_attrs(study._study_id)
        parents = [ids for key, ids in attrs.items() if "parent" in key]
        assert parents, "NSGA-II never reached generation 1"
        assert set(itertools.chain(*parents)) <= complete_ids
        # a generation holds population_size complete trials; pruned ones don't count
        key = optuna.samplers.NSGAIISampler._get_generation_key()
        complete = [
            t.system_attrs[key] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
        ]
        counts = np.bincount(complete)
        assert len(counts) >= 2 and (counts[:-1] == search.population_size).all()


def test_create_scheduler_from_the_spec(tmp_path):
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from tuner.schedulers import create_scheduler

    spec = parse_spec(spec_body(grace_period=1))
    scheduler = create_scheduler(spec, tmp_path, [("val_error", "<=", 0.5)])
    assert isinstance(scheduler, MOASHAScheduler) and scheduler.levels == [1, 3]
    assert scheduler.constraints == [("val_error", "<=", 0.5)]
    asha = create_scheduler(parse_spec(spec_body(algorithm="asha")), tmp_path)
    assert isinstance(asha, AsyncHyperBandScheduler)
    assert (asha._metric, asha._mode, asha._max_t) == ("val_error", "min", 9)
    fifo = create_scheduler(parse_spec({**spec_body(), "scheduler": None}), tmp_path)
    assert type(fifo) is FIFOScheduler
