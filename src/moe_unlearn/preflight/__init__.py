"""Preflight: before any weights load, find every resource a command needs (model, tokenizer and
chat template, data sources, lm-eval datasets, write access) and say which are missing, each in
one line with the key that points at a local copy. `moe-unlearn check` also prints the plan."""

from moe_unlearn.preflight.jobs import demo_job, eval_job, run_job
from moe_unlearn.preflight.resources import CHECKERS, Job, ModelRef, Resolution, Resource, resolve

__all__ = ["CHECKERS", "Job", "ModelRef", "Resolution", "Resource", "demo_job", "eval_job", "resolve", "run_job"]
