"""`eval:` section of an unlearn config: which metrics run and on how much data."""

from __future__ import annotations

from dataclasses import dataclass, field

from moe_unlearn.config import FLOAT_LIMIT, require
from moe_unlearn.data.sources import SourceConfig
from moe_unlearn.eval.metric import METRICS

# Cheap enough to run at the end of every unlearning run on CPU; relearn, lm_eval and tofu_rouge
# (TOFU's own 200-token generations; the TOFU recipes list it) are opt-in.
DEFAULT_METRICS = [
    "nll",
    "prob",
    "token_acc",
    "mc_acc",
    "stability",
    "activation",
    "replay",
    "rouge_qa",
    "rouge_text",
    "privacy",
    "truth_ratio",
    "forget_quality",
    "oracle_distance",
    "forgotten",
    "model_utility",
    "tofu_model_utility",
    "utility_mc",
]


@dataclass
class RelearnConfig:
    """Relearning attack: fine-tune a copy on `fraction` of the forget QA set for `steps` steps."""

    steps: int = 10
    lr: float = 1e-4
    fraction: float = 0.5
    batch_size: int = 8
    eval_every: int = 2

    def validate(self, where: str) -> None:
        require(self.steps >= 1, f"'{where}.steps' must be >= 1, got {self.steps}")
        require(self.lr > 0, f"'{where}.lr' must be > 0, got {self.lr}")
        require(self.lr <= FLOAT_LIMIT * (1 - 0.9), f"'{where}.lr' is too large: AdamW's first step is 10 x lr, "
                                                    f"beyond float32 at {self.lr}")
        require(0 < self.fraction <= 1, f"'{where}.fraction' must be in (0, 1], got {self.fraction}")
        require(self.batch_size >= 1, f"'{where}.batch_size' must be >= 1, got {self.batch_size}")
        require(self.eval_every >= 1, f"'{where}.eval_every' must be >= 1, got {self.eval_every}")


@dataclass
class LmEvalConfig:
    """lm-evaluation-harness bridge; include_path points at a folder of local task YAMLs."""

    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    include_path: str | None = None
    batch_size: int = 8
    num_fewshot: int | None = None

    def validate(self, where: str) -> None:
        require(self.limit is None or self.limit >= 1, f"'{where}.limit' must be >= 1 or null, got {self.limit}")
        require(self.batch_size >= 1, f"'{where}.batch_size' must be >= 1, got {self.batch_size}")


@dataclass
class KnowMemICL:
    """KnowMem's in-context QA pairs per split, as MUSE prompts it (muse_bench eval.py lines 82-88:
    the knowmem `forget_qa_icl` pairs for the forget set, `retain_qa_icl` for the retain set);
    a split without a source is prompted zero-shot with the plain question."""

    forget: SourceConfig | None = None
    retain: SourceConfig | None = None

    def validate(self, where: str) -> None:
        for name in ("forget", "retain"):
            src = getattr(self, name)
            require(src is None or src.kind == "qa", f"'{where}.{name}.kind' must be 'qa' (question, answer pairs), "
                                                     f"got '{getattr(src, 'kind', '')}'")


@dataclass
class EvalConfig:
    """What `evaluate_model` computes; metric names are keys of `moe_unlearn.eval.METRICS`."""

    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    batch_size: int = 16
    max_examples: int | None = 200  # per eval set (forget / retain / holdout / utility), first N
    # generation metrics (ROUGE) on the first N of those: each greedy answer costs up to
    # max_new_tokens forwards, so they dominate evaluation on many items (None: all of them)
    max_generated: int | None = None
    max_length: int = 128
    chat_template: bool = False
    max_new_tokens_qa: int = 32  # KnowMem (muse_bench eval.py line 22: knowmem_max_new_tokens = 32)
    max_new_tokens_text: int = 128  # VerbMem (muse_bench eval.py line 20)
    # TOFU's ROUGE answers: open-unlearning's TOFU generation, configs/generation/default.yaml line 4
    # (max_new_tokens: 200); TOFU's own config/eval_everything.yaml lines 24-26 caps prompt + answer at 200
    max_new_tokens_tofu: int = 200
    knowmem_icl: KnowMemICL = field(default_factory=KnowMemICL)  # MUSE's few-shot KnowMem prompts
    text_prompt_tokens: int = 32  # VerbMem prompt length (at most half of each text)
    mink_k: float = 0.4  # MUSE's Min-40%
    mia_include_eos: bool = False  # score the appended EOS in LOSS/zlib/Min-k%/Min-k%++ (the papers do not)
    # PrivLeak reference AUC in MUSE's orientation (forget 0, holdout 1) when no retrained model is given
    retrained_auc: float = 0.5
    # scored tokens whose vocabulary-sized logits exist at once (core/chunked.py); 0: full logits
    loss_chunk: int = 512
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)

    def validate(self, where: str = "eval") -> None:
        for name in self.metrics:
            METRICS.get(name)  # UserError with a suggestion for a typo
        require(len(set(self.metrics)) == len(self.metrics), f"'{where}.metrics' lists a metric twice")
        for key in ("batch_size", "max_length", "max_new_tokens_qa", "max_new_tokens_text", "max_new_tokens_tofu",
                    "text_prompt_tokens"):
            value = getattr(self, key)
            require(value >= 1, f"'{where}.{key}' must be >= 1, got {value}")
        require(self.max_generated is None or self.max_generated >= 1,
                f"'{where}.max_generated' must be >= 1 or null (all), got {self.max_generated}")
        require(
            self.max_examples is None or self.max_examples >= 1,
            f"'{where}.max_examples' must be >= 1 or null (all), got {self.max_examples}",
        )
        require(self.loss_chunk >= 0, f"'{where}.loss_chunk' must be >= 0 (0: full logits), got {self.loss_chunk}")
        require(0 < self.mink_k <= 1, f"'{where}.mink_k' must be in (0, 1], got {self.mink_k}")
        require(0 < self.retrained_auc < 1, f"'{where}.retrained_auc' must be in (0, 1), got {self.retrained_auc}")
        self.knowmem_icl.validate(f"{where}.knowmem_icl")
        self.relearn.validate(f"{where}.relearn")
        self.lm_eval.validate(f"{where}.lm_eval")
        if "lm_eval" in self.metrics:
            require(bool(self.lm_eval.tasks), f"'{where}.lm_eval.tasks' is empty: list tasks or drop 'lm_eval' from metrics")
