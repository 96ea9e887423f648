"""`UnlearnConfig`: one unlearning run, loaded from YAML (with `base:` inheritance) + overrides.

Top-level keys: base, model, data, method, adapters, train, eval, output_dir, seed, benchmark,
and one optional section per method or adapter NAME (e.g. `npo: {beta: 0.1}`) validated with
that entry's config class. Every mistake is a UserError naming the dotted key.

`benchmark` (wmdp | muse | tofu | rwku, default none) names the published benchmark a run
follows (configs/benchmarks/); it is stored in config.yaml and metrics.json, and the report
and the model card show that benchmark's columns for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from moe_unlearn.adapters import ADAPTERS, Adapter
from moe_unlearn.config import FLOAT_LIMIT, build, read_config, require, to_dict
from moe_unlearn.core.needs import RunNeeds
from moe_unlearn.core.settings import RunSettings
from moe_unlearn.data.config import DataConfig
from moe_unlearn.errors import UserError
from moe_unlearn.eval.config import EvalConfig
from moe_unlearn.methods import METHODS, Method
from moe_unlearn.registry import suggest


def adamw_lr_fits(lr: float, beta1: float) -> bool:
    """AdamW's first step size lr / (1 - beta1) must fit float32, or torch raises mid-step."""
    return lr / (1 - beta1) <= FLOAT_LIMIT


@dataclass
class ModelConfig:
    path: str | None = None  # None: the model named by the data manifest
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    trust_remote_code: bool = False
    # tensors the config declares but the weight files lack are an error unless this is true
    # (then they keep transformers' random initialisation)
    allow_missing_weights: bool = False
    # the model card's metadata for a local model: the hub id it was fine-tuned from (e.g. TOFU's
    # fine-tune of a hub model) and its license (else the base model card's, else "other")
    base_model: str | None = None
    license: str | None = None

    def validate(self, where: str) -> None:
        require(self.path is None or self.path.strip() != "",
                f"'{where}.path' is empty; give a model directory or a hub id, or null for the manifest's model")


@dataclass
class LoraSettings:
    """peft LoRA; target_parameters reaches fused experts and routers (e.g. mlp.experts.gate_up_proj)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None
    target_parameters: list[str] | None = None

    def validate(self, where: str) -> None:
        require(self.r >= 1, f"'{where}.r' must be >= 1, got {self.r}")
        require(self.alpha > 0, f"'{where}.alpha' must be > 0, got {self.alpha}")
        require(0 <= self.dropout < 1, f"'{where}.dropout' must be in [0, 1), got {self.dropout}")
        require(
            bool(self.target_modules) or bool(self.target_parameters),
            f"'{where}' needs target_modules or target_parameters (e.g. [mlp.experts.gate_up_proj])",
        )


@dataclass
class EarlyStop:
    """Stop at a forgetting target, checked at each periodic eval (train.eval_every)."""

    forget_mc_acc_at_most: float | None = None  # fixed bounds, e.g. chance (0.25) + delta
    forget_nll_at_least: float | None = None
    # forget MC and NLL inside the retrain oracle's 95% interval (the holdout split's without an
    # oracle): what "forgotten" means (eval.forgotten)
    forgotten: bool = False
    # the retain guard (train/retain_guard.py): a run that ends with retain MC below this fraction
    # of its step-0 value goes back to the trained values of the last eval above it (e.g. 0.9)
    retain_kept: float | None = None

    def validate(self, where: str) -> None:
        v = self.forget_mc_acc_at_most
        require(v is None or 0 <= v <= 1, f"'{where}.forget_mc_acc_at_most' must be in [0, 1], got {v}")
        k = self.retain_kept
        require(k is None or 0 < k <= 1, f"'{where}.retain_kept' must be in (0, 1], got {k}")

    @property
    def enabled(self) -> bool:
        return (self.forget_mc_acc_at_most is not None or self.forget_nll_at_least is not None or self.forgotten
                or self.retain_kept is not None)

    def fixed_bounds_met(self, forget: dict[str, Any]) -> bool:
        """True when a fixed bound is set and the forget split's aggregates meet it."""
        mc, nll = forget.get("mc_acc"), forget.get("nll")
        return (self.forget_mc_acc_at_most is not None and mc is not None and mc <= self.forget_mc_acc_at_most) or (
            self.forget_nll_at_least is not None and nll is not None and nll >= self.forget_nll_at_least)


@dataclass
class TrainConfig:
    params: list[str] = field(default_factory=lambda: ["all"])  # parameter selector specs
    lora: LoraSettings | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_accum: int = 1  # batch sizes live in data.batch_size / data.retain_batch_size
    max_steps: int | None = 40  # wins over epochs when both are set (as in HF Trainer)
    epochs: float | None = None
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # mixed precision (accelerate); fp16 on CUDA only
    # AdamW's moments: in the parameters' dtype (torch's AdamW), or float32 for bf16/fp16 weights
    # (paged_adamw_32bit's state: 8 bytes per trained parameter instead of 4; train/optim.py)
    optim_state_dtype: Literal["param", "fp32"] = "param"
    load_balancing_coef: float = 0.0  # + coef * load-balancing aux loss (a regulariser, never ascended)
    eval_every: int = 0  # 0: evaluate only at the end
    # the first N retain records in each periodic eval (null: eval.max_examples): the retain split
    # feeds only the trade-off curve and the retain guard, never the forgetting judgement
    eval_retain_examples: int | None = None
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    checkpoint_every: int = 10  # 0: no periodic checkpoints
    # answer tokens whose vocabulary-sized logits exist at once in a loss (core/chunked.py);
    # 0: the model computes full [B, S, V] logits as before
    loss_chunk: int = 256
    # experiment trackers (accelerate's): tensorboard | wandb | mlflow | trackio | ... (train/tracking.py)
    log_with: list[str] = field(default_factory=list)

    def validate(self, where: str) -> None:
        from moe_unlearn.models.selectors import check_specs
        from moe_unlearn.train.tracking import TRACKERS

        for name in self.log_with:
            require(name in TRACKERS, f"'{where}.log_with': unknown tracker '{name}'{suggest(name, list(TRACKERS))}; "
                                      f"choose from {', '.join(TRACKERS)}")

        check_specs(self.params, f"{where}.params")
        require(self.lr > 0, f"'{where}.lr' must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"'{where}.weight_decay' must be >= 0, got {self.weight_decay}")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                f"'{where}.betas' must be two numbers in [0, 1), got {self.betas}")
        require(adamw_lr_fits(self.lr, self.betas[0]),
                f"'{where}.lr' is too large: AdamW's first step is lr / (1 - betas[0]), beyond float32 at {self.lr}")
        require(self.grad_accum >= 1, f"'{where}.grad_accum' must be >= 1, got {self.grad_accum}")
        require(self.max_steps is None or self.max_steps >= 1, f"'{where}.max_steps' must be >= 1, got {self.max_steps}")
        require(self.epochs is None or self.epochs > 0, f"'{where}.epochs' must be > 0, got {self.epochs}")
        require(self.max_steps is not None or self.epochs is not None, f"set '{where}.max_steps' or '{where}.epochs'")
        require(self.warmup_steps >= 0, f"'{where}.warmup_steps' must be >= 0, got {self.warmup_steps}")
        require(self.max_grad_norm is None or self.max_grad_norm > 0,
                f"'{where}.max_grad_norm' must be > 0 or null, got {self.max_grad_norm}")
        require(self.load_balancing_coef >= 0,
                f"'{where}.load_balancing_coef' must be >= 0 (it is a regulariser), got {self.load_balancing_coef}")
        for key in ("eval_every", "checkpoint_every", "loss_chunk"):
            require(getattr(self, key) >= 0, f"'{where}.{key}' must be >= 0, got {getattr(self, key)}")
        require(self.eval_retain_examples is None or self.eval_retain_examples >= 1,
                f"'{where}.eval_retain_examples' must be >= 1 or null (eval.max_examples), got {self.eval_retain_examples}")
        require(not self.early_stop.enabled or self.eval_every > 0,
                f"'{where}.early_stop' needs '{where}.eval_every' > 0")
        require(self.lora is None or self.params == ["all"],
                f"'{where}.params' must stay [all] with '{where}.lora' (LoRA decides what trains)")


@dataclass
class UnlearnConfig:
    method: str
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapters: list[str] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str | None = None
    seed: int = 0
    benchmark: Literal["wmdp", "muse", "tofu", "rwku"] | None = None  # the report's table for this run
    # validated config objects of the method/adapter sections, by name
    settings: dict[str, Any] = field(default_factory=dict)
    # the YAML files this config was read from (inputs: a run never writes over them)
    files: list[str] = field(default_factory=list)

    def validate(self, where: str) -> None:
        require(0 <= self.seed < 2**32, f"'seed' must be in 0..2**32-1 (numpy's range), got {self.seed}")

    def section(self, name: str) -> Any:
        """The config object for method/adapter `name` (defaults when its section is absent)."""
        return self.settings[name]

    def to_dict(self) -> dict[str, Any]:
        """Fully resolved config as plain data (what config.yaml holds)."""
        out = {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in INTERNAL}
        out.update({name: to_dict(obj) for name, obj in self.settings.items()})
        return out


INTERNAL = ("settings", "files")  # UnlearnConfig fields that are not config keys


def build_config(raw: dict[str, Any]) -> UnlearnConfig:
    """Validate a merged config mapping into an UnlearnConfig."""
    raw = dict(raw)
    if "base" in raw:  # resolve_yaml consumes every file's `base:`; this one came from an override
        raise UserError("'base' names the files a config file extends and is read from that file; "
                        "write it in the YAML instead of an override")
    fields = [f.name for f in dataclasses.fields(UnlearnConfig) if f.name not in INTERNAL]
    names = METHODS.names() + ADAPTERS.names()
    sections = {}
    for key in list(raw):
        if key in names:
            sections[key] = raw.pop(key)
        elif key not in fields:
            raise UserError(f"unknown config key '{key}'{suggest(str(key), fields + names)}")
    if "method" not in raw:
        raise UserError(f"missing required config key 'method' (one of: {', '.join(METHODS.names())})")
    cfg = build(UnlearnConfig, raw)
    method_cls = METHODS.get(cfg.method)
    adapter_classes = [ADAPTERS.get(a) for a in cfg.adapters]
    require(len(set(cfg.adapters)) == len(cfg.adapters), f"'adapters' lists an adapter twice: {cfg.adapters}")
    entries = {cfg.method: method_cls, **dict(zip(cfg.adapters, adapter_classes))}
    for name in names:
        if name in sections and name not in entries:
            entries[name] = METHODS.get(name) if name in METHODS else ADAPTERS.get(name)
    cfg.settings = {name: build(cls.config_cls, sections.get(name), name) for name, cls in entries.items()}
    check_combination(cfg)
    return cfg


def run_needs(method: Method, adapters: Sequence[Adapter]) -> RunNeeds:
    """The capability records of a run's method and adapters, for their settings."""
    return RunNeeds(method.needs(method.cfg), {a.name: a.needs(a.cfg) for a in adapters})


def run_settings(cfg: UnlearnConfig) -> RunSettings:
    """What core/, methods and adapters read of the config (RunContext.settings)."""
    t = cfg.train
    return RunSettings(seed=cfg.seed, batch_size=cfg.data.batch_size, loss_chunk=t.loss_chunk,
                       precision=t.precision, grad_accum=t.grad_accum, load_balancing_coef=t.load_balancing_coef)


def config_needs(cfg: UnlearnConfig) -> RunNeeds:
    """The needs of the config's method and adapters, from their sections alone (no model, no data)."""
    return run_needs(METHODS.get(cfg.method)(cfg.section(cfg.method)),
                     [ADAPTERS.get(name)(cfg.section(name)) for name in cfg.adapters])


def check_combination(cfg: UnlearnConfig) -> None:
    """Refuse a method x adapters x train combination the capability records rule out."""
    needs = config_needs(cfg)
    adapters = needs.adapters
    for a, na in adapters.items():
        for b, nb in adapters.items():
            if b != a and (b in na.conflicts or a in nb.conflicts):
                raise UserError(f"adapters '{a}' and '{b}' cannot be combined; drop one of them")
        if cfg.train.lora is not None and not na.lora:
            raise UserError(f"adapter '{a}' cannot work on LoRA deltas; drop train.lora and pick the "
                            "trained parameters with train.params")
        if na.requires_retain_term and not needs.method.retain_term:
            raise UserError(f"adapter '{a}' reweights the retain loss, but method '{cfg.method}' has no retain "
                            f"term; use a method with one (graddiff, npo, simnpo, rmu, ...) with alpha > 0, or drop {a}")
    for selector in (a for a, na in adapters.items() if na.selects_trainable):
        for other, no in adapters.items():
            if other != selector and no.edits_untrained:
                raise UserError(f"'{selector}' trains only what it selects and leaves the rest unchanged, "
                                f"but {no.edits_untrained}")


def check_retain_set(cfg: UnlearnConfig, needs: RunNeeds, *, retain_records: bool) -> None:
    """A retain term, or an adapter that needs a retain forward, needs retain records in the
    train format (retain_records: whether the data has them)."""
    if retain_records:
        return
    fmt = cfg.data.train_format
    if needs.method.retain_term:
        raise UserError(f"method '{cfg.method}' has a retain term but the retain set has no '{fmt}' records; "
                        f"provide them or set {cfg.method}.alpha=0")
    needing = [name for name, n in needs.adapters.items() if n.retain_forward]
    if needing:
        raise UserError(f"adapter '{needing[0]}' needs retain forwards but the retain set has no '{fmt}' records; "
                        "provide them")


def load_config(path: str | Path, overrides: list[str] | None = None) -> UnlearnConfig:
    """YAML file (+ its bases) + dotted overrides -> validated UnlearnConfig."""
    files: list[str] = []
    cfg = build_config(read_config(path, overrides or [], files=files))
    cfg.files = files
    return cfg
