"""The metric names every trial reports (Parquet columns and objectives use them)."""

from __future__ import annotations

METRICS = (
    "val_accuracy", "val_error", "test_accuracy", "test_error", "val_f1_macro", "train_loss",
    "train_flops", "inference_flops", "nonzero_params", "total_params", "density",
    "train_seconds", "inference_seconds", "peak_memory_bytes", "epoch", "diverged",
    "model_bytes_dense", "model_bytes_csr",
)  # fmt: skip

# Objectives whose values grow with training length: comparable only at equal epochs.
CUMULATIVE_METRICS = ("train_flops", "train_seconds")

# The study's Ray metrics (tuner.monitoring publishes them; docs/grafana/sparsetune.json
# queries them). Prometheus adds Ray's `ray_` prefix, and `_total` to counters.
STUDY_METRICS = {
    "finished": "sparsetune_trials_finished",
    "failed": "sparsetune_trials_failed",
    "stopped": "sparsetune_trials_stopped",
    "best": "sparsetune_best_objective",
    "hypervolume": "sparsetune_hypervolume",
    "rate": "sparsetune_trials_per_minute",
}
STUDY_COUNTERS = ("finished", "failed", "stopped")


def prometheus_name(key: str) -> str:
    """The name a study metric has in Prometheus, e.g. ray_sparsetune_trials_finished_total."""
    return f"ray_{STUDY_METRICS[key]}" + ("_total" if key in STUDY_COUNTERS else "")
