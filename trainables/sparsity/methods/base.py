"""The sparse-method component: what every method declares, and the knobs methods share.

A method is one class (google-research/rigl's shape: one mask update, a method is its drop and
grow scores and its schedule), registered in `METHODS` under its name by a decorator, in its
own file in this package (every module here is imported by the package, so a new method is
one new file):

    @METHODS.register("mest")
    class MEST(Method):
        knobs = {**SPARSE, **SCHEDULE, "mest_lambda": Knob(1.0, float, "...", low=0.0)}
        dynamic = True
        dense_gradient = property(lambda self: True)  # its scores read the dense gradient
        def drop_score(self, name, weight, training):
            grad = training.dense_gradient(weight).abs()
            return weight.detach().abs() + self.values["mest_lambda"] * grad
        def grow_score(self, name, weight, training):
            return training.dense_gradient(weight).abs()

What a method declares: `knobs` (the hyperparameters it reads: the config validates them, fills
their defaults, refuses them for other methods, and Parquet records them); `sparse` (False:
dense training); `dynamic` (masks change on the schedule by `drop_score`/`grow_score`);
`dense_gradient` (the grow score reads the dense gradient on update steps: 2 f_S + f_D there),
`dense_gradient_every_step` (every step: SNFS), `rewire_after_step` (SET: the optimizer step
runs, then the masks change); its state (`state_dict`); `check(config)` for rules across knobs
(raised before any trial starts); and `make_engine(setup)` for methods with an engine of
their own (SWAT, HyperSparse). The engine (`trainables.sparsity.engine.SparseTraining`) runs the
schedule, the shared mask update and the FLOP accounting for all of them.

Torch-free at import: a spec is validated against these declarations before torch loads; a
method imports torch inside the functions that compute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from contract.errors import ConfigError
from trainables.registry import Component, Knob, Registry

# --- knobs that several methods read (one definition each) ----------------------------------
SPARSE: dict[str, Knob] = {
    "distribution": Knob("uniform", str, "how the global sparsity is spread over layers"),
    "pattern": Knob("unstructured", str, "mask shape (its knobs: below; n:m: quote it in YAML)"),
    "dense_first_last": Knob(False, bool, "keep the first and last prunable layer dense"),
    "sparse_init": Knob(True, bool, "rescale initial weights by 1/sqrt(layer density)"),
}
UPDATE_END = Knob(
    0.75, float, "fraction of training after which masks stop changing", low=0.0, high=1.0,
    low_open=True,
)  # fmt: skip
SCHEDULE: dict[str, Knob] = {
    "update_interval": Knob(100, int, "steps (or epochs: update_unit) between mask updates", low=1),
    "update_unit": Knob(
        "steps", str, "unit of update_interval: steps | epochs", choices=("steps", "epochs")
    ),
    "update_end": UPDATE_END,
    "drop_fraction": Knob(
        0.3,
        float,
        "fraction of active weights replaced per update (cosine-decayed to 0 at update_end)",
        low=0.0,
        high=1.0,
    ),  # fmt: skip
    "count_rounding": Knob(
        "floor",
        str,
        "drop count int(n * fraction) (floor, rigl's) or round",
        choices=("floor", "round"),
    ),  # fmt: skip
}
SKIP_STEP = Knob(True, bool, "skip the optimizer step on a mask-update step (rigl's reference)")


class Method(Component):
    """A sparse-training method. See the module's doc for what a subclass declares."""

    sparse: ClassVar[bool] = True
    dynamic: ClassVar[bool] = False
    rewire_after_step: ClassVar[bool] = False

    @property
    def dense_gradient(self) -> bool:
        """The grow score reads the dense weight gradient on update steps."""
        return False

    @property
    def dense_gradient_every_step(self) -> bool:
        """The method reads the dense weight gradient on every step (SNFS's momentum)."""
        return False

    # --- rules across knobs, checked when a config is resolved (before torch loads) ---------
    @classmethod
    def check(cls, config: Mapping[str, Any], where: str = "") -> None:
        """Raise ConfigError for a combination of knobs this method cannot train."""

    # --- the mask update ------------------------------------------------------------------
    def drop_score(self, name: str, weight: Any, training: Any) -> Any:
        """Per position, in the weight's shape: the lowest active ones are dropped."""
        raise NotImplementedError(f"method {self.name} does not update masks")

    def grow_score(self, name: str, weight: Any, training: Any) -> Any:
        """Per position, in the weight's shape: the highest inactive ones are grown."""
        raise NotImplementedError(f"method {self.name} does not update masks")

    def layer_update(self, training: Any, name: str, weight: Any, step: int, fraction: float):
        """One layer's new mask (None: unchanged): the shared drop/grow update."""
        return training.layer_update(name, weight, step, fraction)

    def new_masks(self, training: Any, step: int, fraction: float) -> dict[str, Any]:
        """The layers' new masks at an update step (those that change)."""
        found = {}
        for name, weight in training.weights.items():
            mask = self.layer_update(training, name, weight, step, fraction)
            if mask is not None:
                found[name] = mask
        return found

    # --- state and per-step hooks -----------------------------------------------------------
    def attach(self, training: Any) -> None:
        """Called once the engine holds its masks: set up per-weight state here."""

    def observe_gradients(self, training: Any) -> None:
        """Called after every backward, before the mask update (SNFS updates its momentum)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    # --- building the engine ----------------------------------------------------------------
    def build(self, model: Any, config: Mapping[str, Any], **run: Any) -> Any:
        """The engine for `model` (masks applied at once). `run`: total_steps, steps_per_epoch,
        generator, input_shape, gradient_momentum (see engine.build_sparse_training)."""
        from trainables.sparsity.engine import build_sparse_training

        return build_sparse_training(self, model, config, **run)

    def make_engine(self, setup: Any) -> Any:
        """The engine for `setup` (an engine.EngineSetup): random masks of the pattern at the
        layers' densities (SWAT and HyperSparse have engines of their own)."""
        from trainables.sparsity.engine import mask_engine

        return mask_engine(self, setup)


def refuse(where: str, message: str) -> None:
    raise ConfigError(f"{where}{message}")


METHODS = Registry("method", "the sparse-training method (its knobs: below)", base=Method)
