"""An example custom trainable: L1/elastic-net logistic regression on digits (scikit-learn).

Any function of the config that calls `ray.tune.report(metrics)` plugs into a study:
`trainable: studies/custom_sgd.py:train` in the spec, with its own search space. Searchers,
Parquet, Pareto layers and re-evaluation work for it like for the built-in trainer.
"""

from __future__ import annotations

import numpy as np
from ray import tune
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


def train(config: dict) -> None:
    x, y = load_digits(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=0
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(a) for a in (x_train, x_val, x_test))
    model = SGDClassifier(
        loss="log_loss",
        penalty="elasticnet",
        alpha=config["alpha"],
        l1_ratio=config["l1_ratio"],
        random_state=config.get("seed", 0),
    )
    classes = np.unique(y)
    for epoch in range(1, config.get("epochs", 10) + 1):
        model.partial_fit(x_train, y_train, classes=classes)
        nonzero = int(np.count_nonzero(model.coef_))
        tune.report(
            {
                "epoch": epoch,
                "val_error": 1.0 - model.score(x_val, y_val),
                "test_error": 1.0 - model.score(x_test, y_test),
                "nonzero_weights": nonzero,
                "density": nonzero / model.coef_.size,
            }
        )
