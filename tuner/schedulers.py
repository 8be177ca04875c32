"""Trial schedulers: `fifo` (every trial trains its full budget), `moasha` (multi-objective
early stopping) and `asha` (Ray's own ASHA on the first objective, the single-objective baseline).

**MO-ASHA** (Schmucker et al. 2021; Salinas et al. 2021) is ASHA (Li et al. 2020) with the
scalar cutoff replaced by a non-dominated ranking. Rungs sit at `grace_period * rf**k` epochs
below `max_t`. When a trial first reports an epoch at or past a rung, it is ranked among every
trial recorded at that rung and itself (the decision is asynchronous, as in ASHA: it is taken
once, on arrival, against whoever got there before); it continues when its 0-based position
is below `n / rf`, else it stops. The first trial at a rung always continues.

The ranking: non-dominated layers (`results.pareto.non_dominated_layers`, layer 1 first),
then, inside a layer, the order of an **epsilon-net** (Salinas et al., as Syne Tune's
`nondominated_sort`): start at the layer's point that is best in the study's first objective,
then repeatedly take the point farthest (Euclidean, each objective scaled to [0, 1] over the
rung) from those already taken; ties go to the trial that reached the rung first. Why this
tie rule and not NSGA-II's crowding distance: the question at a rung is "which k of this
layer go on", and the epsilon-net's order answers it for every k at once with a spread-out
subset (its first k points cover the layer), where crowding distance scores each point alone,
gives every extreme point the same infinite score (up to 2 per objective, so 6 ties with
three objectives) and lets two near-duplicates both rank high. Seeding at the best first
objective (not at random, as Syne Tune does) makes every decision reproducible, which a
resumed study needs; scaling each objective (Syne Tune does not) keeps `train_flops`
(~1e9) from drowning `val_error` (~0.1) in the distances.

Objectives that grow with training length (`train_flops`, `train_seconds`:
`contract.metrics.CUMULATIVE_METRICS`) are fair to rank: every trial at a rung has trained the
same number of epochs.

With `search.constraints`, a rung ranks as NSGA-II's constrained domination does (Deb's rule):
feasible trials first, in the order above, then infeasible ones by total violation. A
constraint on a cumulative metric is checked on the value so far (optimistic: such a trial
is stopped for it only once it already exceeds the bound).

**Nothing decided twice.** Tune 2.60 does not save a scheduler with its experiment state, so
the rung records (each trial's objective values and decision per rung) are written through to
`<experiment>/scheduler-state.json` at every decision and read back when the study resumes;
`forget_unknown_trials` drops the records of trials that Tune's restored state doesn't know (they
finished after Tune's last save and run again under new ids). A trial that reports a rung it
already has a record at (restarted from a checkpoint, or rerun after the driver died) gets the
recorded decision again, and is not counted twice. Every decision is appended to
`<experiment>/scheduler-decisions.jsonl` (`replayed: true` for a repeated rung report): the
audit the tests read.

The **epoch** of a result is its `epoch` (the built-in trainer and most custom trainables
report it), else Tune's `training_iteration`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from results.pareto import non_dominated_layers

STATE_FILE = "scheduler-state.json"
DECISIONS_FILE = "scheduler-decisions.jsonl"
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def result_epoch(result: dict[str, Any] | None) -> int | None:
    """The training length a result stands for: `epoch`, else `training_iteration`."""
    if not result:
        return None
    for key in ("epoch", "training_iteration"):
        value = result.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return int(value)
    return None


def rung_levels(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """The rungs, ascending: grace_period * rf**k epochs for every k with a level below max_t."""
    levels, k = [], 0
    while True:
        level = int(round(grace_period * reduction_factor**k))
        if level >= max_t:
            return levels
        if not levels or level > levels[-1]:
            levels.append(level)
        k += 1


def epsilon_net_order(points: np.ndarray) -> list[int]:
    """Indices of ``points`` (one layer, minimization form, scaled) in epsilon-net order.

    Seed: the best first objective (lowest index on ties); then the point farthest from the
    chosen ones (lowest index on ties).
    """
    n = len(points)
    if n == 0:
        return []
    first = int(np.lexsort((np.arange(n), points[:, 0]))[0])
    order = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    nearest[first] = -np.inf
    while len(order) < n:
        # argmax takes the lowest index among ties; rounding makes ties that differ only by
        # floating-point error (equal distances summed in another order) ties
        choice = int(np.argmax(np.round(nearest, 9)))
        order.append(choice)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[choice], axis=1))
        nearest[order] = -np.inf
    return order


def promotion_order(points: np.ndarray) -> list[int]:
    """The rung's ranking: row indices of ``points`` (minimization form, rows in arrival
    order), best first: by non-dominated layer, then epsilon-net order inside each layer."""
    points = np.asarray(points, dtype=float)
    if len(points) == 0:
        return []
    frame = pd.DataFrame(points, columns=[f"o{i}" for i in range(points.shape[1])])
    layers = non_dominated_layers(frame, {c: "min" for c in frame.columns}).to_numpy()
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = (points - low) / span
    order: list[int] = []
    for layer in sorted(set(layers.tolist())):
        members = np.flatnonzero(layers == layer)
        order += [int(members[i]) for i in epsilon_net_order(scaled[members])]
    return order


def constrained_order(points: np.ndarray, violations: np.ndarray | None = None) -> list[int]:
    """`promotion_order` under constraints (Deb's rule, as NSGA-II's constrained domination):
    feasible rows (violation 0) first, in promotion order; then the infeasible ones, least
    violation first (ties: earlier arrival)."""
    if violations is None or not np.any(violations > 0):
        return promotion_order(points)
    feasible = np.flatnonzero(violations <= 0)
    infeasible = np.flatnonzero(violations > 0)
    order = [int(feasible[i]) for i in promotion_order(points[feasible])]
    return order + [int(i) for i in infeasible[np.argsort(violations[infeasible], kind="stable")]]


def promotes(
    points: np.ndarray, reduction_factor: float, violations: np.ndarray | None = None
) -> bool:
    """Whether the last row of ``points`` (the trial arriving at the rung; earlier rows were
    recorded before it) continues: its position in the rung's order is below n / rf.
    ``violations``: each row's total constraint violation (0: feasible), or None."""
    n = len(points)
    if n <= 1:
        return True
    position = constrained_order(np.asarray(points, dtype=float), violations).index(n - 1)
    return position < n / reduction_factor


def _write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)


class MOASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving over several objectives (see the module docstring).

    ``objectives`` maps metric -> "min" | "max" (the study's, in its order). ``state_dir`` is
    the Tune experiment folder, where the rung records live; ``fresh`` removes records left
    there by an earlier attempt (a new study; a resumed one keeps them).
    """

    def __init__(
        self,
        objectives: dict[str, str],
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3,
        state_dir: str | Path | None = None,
        fresh: bool = True,
        constraints: list[tuple[str, str, float]] | None = None,
    ):
        super().__init__()
        self.objectives = dict(objectives)
        self.max_t, self.grace_period, self.reduction_factor = max_t, grace_period, reduction_factor
        self.levels = rung_levels(grace_period, reduction_factor, max_t)
        # (metric, "<=" | ">=", bound): the search's constraints, feasible trials rank first
        self.constraints = list(constraints or [])
        self.state_dir = None if state_dir is None else Path(state_dir)
        # rung level -> trial_id -> {"values": [...] (minimization form) or None, "decision"}
        self.rungs: dict[int, dict[str, dict[str, Any]]] = {level: {} for level in self.levels}
        self.num_stopped = 0
        self._loaded = False
        if fresh and self.state_dir is not None:
            for name in (STATE_FILE, DECISIONS_FILE):
                (self.state_dir / name).unlink(missing_ok=True)

    # -- Tune's scheduler API ------------------------------------------------------------
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are the scheduler's own; TuneConfig's metric is unused

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def debug_string(self) -> str:
        sizes = ", ".join(f"{level}: {len(rung)}" for level, rung in self.rungs.items())
        return f"MO-ASHA: {self.num_stopped} stopped; trials per rung {{{sizes}}}"

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    # -- the decisions -------------------------------------------------------------------
    def minimization_values(self, result: dict[str, Any]) -> list[float] | None:
        """The objectives of a result, max ones negated; None when one is missing or not a
        number (the result is then not ranked)."""
        values = []
        for metric, mode in self.objectives.items():
            value = result.get(metric)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            values.append(-float(value) if mode == "max" else float(value))
        return values

    def violation(self, result: dict[str, Any]) -> float:
        """Total violation of the constraints by this result (0: feasible; a missing metric
        counts as infinitely violated, as in tuner.searchers.constraint_values)."""
        total = 0.0
        for metric, op, bound in self.constraints:
            value = result.get(metric)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return math.inf
            excess = float(value) - bound if op == "<=" else bound - float(value)
            total += max(excess, 0.0)
        return total

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for one result of a trial (recorded when it is a rung's first)."""
        self._load()
        epoch = result_epoch(result)
        if epoch is None:
            return CONTINUE
        if epoch >= self.max_t:
            return STOP  # its full budget: Tune ends it (the built-in trainer ends by itself)
        reached = [level for level in self.levels if level <= epoch]
        if not reached:
            return CONTINUE
        level = reached[-1]
        rung = self.rungs[level]
        if trial_id in rung:  # a repeated report (a restart): the decision taken then holds
            decision = rung[trial_id]["decision"]
            if epoch == level:  # its rung report again, not a later epoch of a promoted trial
                self._log(trial_id, level, epoch, decision, len(rung), replayed=True)
            return decision
        values = self.minimization_values(result)
        if values is None:
            return CONTINUE  # nothing to rank it by; Tune's metric check reports the gap
        if not all(math.isfinite(v) for v in values) or result.get("diverged"):
            decision, values = STOP, None  # NaN/inf never ranks, and never goes on
        else:
            ranked = [r for r in rung.values() if r["values"] is not None]
            points = np.array([*(r["values"] for r in ranked), values], dtype=float)
            violation = self.violation(result)
            violations = np.array([*(r.get("violation", 0.0) for r in ranked), violation])
            decision = CONTINUE if promotes(points, self.reduction_factor, violations) else STOP
        rung[trial_id] = {"values": values, "decision": decision}
        if self.constraints and values is not None:
            rung[trial_id]["violation"] = violation
        if decision == STOP:
            self.num_stopped += 1
        self._persist()
        self._log(trial_id, level, epoch, decision, len(rung))
        return decision

    # -- state: written through, read back on resume --------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the scheduler with the Tuner: the file, not a stale copy, is the truth.
        state = dict(self.__dict__)
        if self.state_dir is not None:
            state["rungs"] = {level: {} for level in self.levels}
            state["num_stopped"], state["_loaded"] = 0, False
        return state

    def get_state(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "rungs": {str(level): rung for level, rung in self.rungs.items()},
            "num_stopped": self.num_stopped,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if [int(x) for x in state["levels"]] != self.levels:
            raise ValueError(
                f"scheduler state has rungs {state['levels']}, this study {self.levels}: the "
                "spec's scheduler section changed since the study started"
            )
        self.rungs = {int(level): rung for level, rung in state["rungs"].items()}
        self.num_stopped = int(state["num_stopped"])

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = self.state_path
        if path is not None and path.is_file():
            self.set_state(json.loads(path.read_text()))

    @property
    def state_path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / STATE_FILE

    def _persist(self) -> None:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.state_dir / STATE_FILE, self.get_state())

    def _log(self, trial_id, level, epoch, decision, n, replayed: bool = False) -> None:
        """One line per decision (and per replayed one) in the decisions log."""
        if self.state_dir is None:
            return
        entry = {"trial_id": trial_id, "rung": level, "epoch": epoch, "decision": decision}
        entry.update(trials_at_rung=n, replayed=replayed)
        with open(self.state_dir / DECISIONS_FILE, "a") as log:
            log.write(json.dumps(entry) + "\n")


def forget_unknown_trials(experiment_dir: str | Path, known: set[str]) -> int:
    """Drop rung records of trials Tune's restored state doesn't know; returns how many."""
    path = Path(experiment_dir) / STATE_FILE
    if not path.is_file():
        return 0
    state = json.loads(path.read_text())
    dropped = 0
    for rung in state["rungs"].values():
        for trial_id in [t for t in rung if t not in known]:
            del rung[trial_id]
            dropped += 1
    if dropped:
        state["num_stopped"] = sum(
            r["decision"] == STOP for rung in state["rungs"].values() for r in rung.values()
        )
        _write_json_atomic(path, state)
    return dropped


def point_scheduler_at(tuner, experiment_dir: str | Path | None) -> None:
    """A restored Tuner's MO-ASHA reads its rung records from ``experiment_dir`` (the study
    may have moved since Tune pickled the scheduler); other schedulers are left alone."""
    scheduler = tuner._local_tuner._tune_config.scheduler  # Tune's own, as unpickled
    if isinstance(scheduler, MOASHAScheduler):
        scheduler.state_dir = None if experiment_dir is None else Path(experiment_dir)
        scheduler._loaded = False


def create_scheduler(
    spec, experiment_dir: str | Path | None, constraints: list[tuple[str, str, float]] = ()
) -> TrialScheduler:
    """A new search's scheduler (spec.scheduler), its rung records kept in ``experiment_dir``
    (a resumed search gets the one Tune pickled with the Tuner; it reads the records back).
    ``constraints``: the search's, parsed (`tuner.searchers.parse_constraint`)."""
    config = spec.scheduler
    if config.algorithm == "moasha":
        return MOASHAScheduler(
            spec.objectives,
            max_t=config.max_t,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
            state_dir=experiment_dir,
            fresh=True,
            constraints=list(constraints),
        )
    if config.algorithm == "asha":  # Ray's own, on the first objective (what Ray users do)
        metric, mode = next(iter(spec.objectives.items()))
        return AsyncHyperBandScheduler(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=config.max_t,
            grace_period=config.grace_period,
            reduction_factor=config.reduction_factor,
        )
    return FIFOScheduler()
