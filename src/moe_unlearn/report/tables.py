"""The report table's columns for runs of a published benchmark, so results sit next to the paper's.

A run belongs to a benchmark through the config key `benchmark` (stored in config.yaml and
metrics.json; configs/benchmarks/*.yaml set it). When every run of a report has the same
benchmark, the table shows the columns that benchmark's paper reports; otherwise (the embedded
benchmark, mixed runs) the default columns (render.COLUMNS) stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from moe_unlearn.registry import Registry
from moe_unlearn.report.format import get

Column = tuple[str, Callable[[dict[str, Any]], Any]]


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    notes: list[str] = field(default_factory=list)  # how to read it, after the general notes


TABLES: Registry[Table] = Registry("benchmark table")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def x100(x: Any) -> float | None:
    """A [0, 1] score as the percentage the papers print."""
    v = _num(x)
    return None if v is None else 100.0 * v


def lm_eval_acc(task: str) -> Callable[[dict[str, Any]], Any]:
    """The lm-evaluation-harness `acc` of one task (its `acc,none` entry)."""
    return lambda m: get(m, "lm_eval", "tasks", task, "acc,none")


def tofu_forget_truth_ratio(m: dict[str, Any]) -> Any:
    """TOFU's forget statistic mean min(R, 1/R): forget.truth_ratio, or in a metrics.json written before
    truth_ratio reported it there (no `truth_ratio_stat` key; truth_ratio then held max(0, 1 - R)), the
    old truth_ratio_tofu_forget_stat."""
    forget = m.get("forget") or {}
    return forget.get("truth_ratio") if "truth_ratio_stat" in forget else forget.get("truth_ratio_tofu_forget_stat")


_STEPS: Column = ("steps", lambda m: m.get("steps"))
_STAB: list[Column] = [
    ("stab F", lambda m: get(m, "routing", "stability", "forget")),
    ("stab R ↑", lambda m: get(m, "routing", "stability", "retain")),
    ("replay Δacc ↓", lambda m: get(m, "replay", "value")),
]
_SECONDS: Column = ("seconds", lambda m: get(m, "timing", "total_seconds"))

def first_of(m: dict, *paths: tuple[str, ...]):
    """The first of these metric values the run has (None when it has none)."""
    return next((v for p in paths if (v := get(m, *p)) is not None), None)


TABLES.register("wmdp")(Table(
    [_STEPS,
     ("WMDP-Bio acc ↓", lm_eval_acc("wmdp_bio")),
     ("WMDP-Cyber acc ↓", lm_eval_acc("wmdp_cyber")),
     ("MMLU acc ↑", lm_eval_acc("mmlu")),
     *_STAB, _SECONDS],
    ["WMDP (as SEUF reports it): zero-shot lm-evaluation-harness accuracy on WMDP-Bio / -Cyber (chance 0.25) "
     "and MMLU; stab F / R: routing stability on the WMDP and MMLU questions."],
))
TABLES.register("muse")(Table(
    [_STEPS,
     ("VerbMem D_f ↓", lambda m: x100(get(m, "forget", "rouge_text"))),
     ("KnowMem D_f ↓", lambda m: x100(get(m, "forget", "rouge_qa"))),
     ("KnowMem D_r ↑", lambda m: x100(get(m, "retain", "rouge_qa"))),
     ("PrivLeak (→0)", lambda m: get(m, "privacy", "value")),  # MUSE's PrivLeak (Min-40%)
     *_STAB, _SECONDS],
    # PrivLeak = (AUC - AUC_retrain) / AUC_retrain x 100, AUC with forget labelled 0 and holdout 1 and
    # low loss scored as member (muse_bench eval.py line 78, metrics/privleak.py lines 58-59 and 85-90):
    # a model that still knows the forget set ranks it above holdout, AUC -> 0, PrivLeak -> -100.
    ["MUSE's four criteria: VerbMem and KnowMem are ROUGE-L F1 x100 (as MUSE prints them); PrivLeak in "
     "MUSE's convention: 0 ideal (like the retrained model); very negative = the forget set looks MORE familiar "
     "than unseen data (under-unlearned, membership still leaks); positive = it looks less familiar "
     "(over-unlearned)."],
))
TABLES.register("tofu")(Table(
    [_STEPS,
     ("forget quality ↑", lambda m: get(m, "forget_quality", "value")),
     ("model utility ↑", lambda m: get(m, "tofu_model_utility", "value")),
     ("forget ROUGE-L ↓", lambda m: get(m, "forget", "tofu_rouge")),
     ("forget truth ratio", tofu_forget_truth_ratio),
     *_STAB, _SECONDS],
    ["TOFU: forget quality is the KS-test p-value against a retain-only model (needs `moe-unlearn eval "
     "--retrained`); model utility is TOFU's harmonic mean over retain, real authors and world facts; "
     "forget truth ratio is TOFU's forget statistic, mean min(R, 1/R): it rises towards 1 (truth and "
     "perturbations equally likely) as the model forgets."],
))
TABLES.register("rwku")(Table(
    [_STEPS,
     ("forget FB ↓", lambda m: x100(get(m, "forget", "rwku_rouge_FB"))),
     ("forget QA ↓", lambda m: x100(get(m, "forget", "rwku_rouge_QA"))),
     ("forget AA ↓", lambda m: x100(get(m, "forget", "rwku_rouge_AA"))),
     ("neighbor FB ↑", lambda m: x100(get(m, "retain", "rwku_rouge_FB"))),
     ("neighbor QA ↑", lambda m: x100(get(m, "retain", "rwku_rouge_QA"))),
     ("MIA FM ↑", lambda m: get(m, "forget", "text_nll")),
     ("MIA RM", lambda m: get(m, "retain", "text_nll")),
     ("utility Gen ↑", lambda m: x100(first_of(m, ("rwku_mmlu", "value"), ("utility_mc", "value")))),
     *_STAB, _SECONDS],
    ["RWKU: forget (FB fill-in-the-blank, QA, AA adversarial) and neighbor probes are ROUGE-L recall x100; "
     "MIA FM / RM is the mean token loss on the forget / retain member texts (FM should rise, RM stay); "
     "utility Gen is RWKU's MMLU subset x100, scored as RWKU does (rwku_mmlu: few-shot, likeliest answer letter; "
     "else utility_mc, zero-shot choice likelihood). RWKU's Rea / Tru / Fac / Flu utility columns are not computed."],
))


def benchmark_of(metrics: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """The run's benchmark: config.yaml's `benchmark`, else metrics.json's."""
    name = (config or {}).get("benchmark") or metrics.get("benchmark")
    return str(name) if name else None


def select_table(runs: list[Any]) -> Table | None:
    """The benchmark table when every run names the same registered benchmark, else None (default columns)."""
    names = {benchmark_of(r.metrics, r.config) for r in runs}
    if len(names) != 1:
        return None
    name = names.pop()
    return TABLES.get(name) if name is not None and name in TABLES else None
