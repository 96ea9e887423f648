"""Experiment tracking through accelerate's trackers (`train.log_with`): TensorBoard, Weights &
Biases, MLflow, Trackio, ... get the run config, every logged loss and metric, and the final
metrics. OUT/log.jsonl stays the source of truth; a tracker is a view of it.

Offline modes are the trackers' own: TensorBoard writes files (OUT/tracking/), `WANDB_MODE=offline`,
`MLFLOW_TRACKING_URI=file:...`.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from moe_unlearn.errors import UserError

# accelerate's tracker name -> the package it needs
TRACKERS: dict[str, str] = {
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
    "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
}


def check_installed(names: list[str]) -> None:
    """Refuse, before training, a tracker whose package is missing (accelerate would drop it silently)."""
    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"train.log_with: {name} needs the '{TRACKERS[name]}' package: pip install {TRACKERS[name]}")


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested record under its '/'-joined path (lists and text skipped)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, f"{path}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[path] = float(value)
    return out


def hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The run config flattened to the scalar values every tracker accepts (others as text)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(hparams(value, f"{path}/"))
        else:
            out[path] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
