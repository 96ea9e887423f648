"""GradDiff: gamma * (-CE(D_f)) + alpha * retain loss (NLL, or KL masked to answer tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from moe_unlearn.methods.base import METHODS, RetainConfig
from moe_unlearn.methods.ga import GA


@dataclass
class GradDiffConfig(RetainConfig):
    """gamma, alpha and retain_loss ("nll" | "kl") as in open-unlearning's GradDiff."""


@METHODS.register("graddiff")
class GradDiff(GA):
    """GA's forget term; the retain term comes with RetainConfig (Method.loss)."""

    name = "graddiff"
    config_cls = GradDiffConfig
