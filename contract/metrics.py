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
