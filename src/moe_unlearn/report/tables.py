"""The report table's columns for runs of a published benchmark, so results sit next to the paper's.

A run belongs to a benchmark through the config key `benchmark` (stored in config.yaml and
metrics.json; configs/benchmarks/*.yaml set it). When every run of a report has the same
benchmark, the table shows the columns that benchmark's paper reports; otherwise (the embedded
benchmark, mixed runs) the default columns (render.COLUMNS) stay. A column reads its value
through eval/schema.py and takes its ↑ / ↓ from the metric's declared direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from moe_unlearn.eval.schema import STABILITY, Key, metric_key, run_key
from moe_unlearn.registry import Registry

Column = tuple[str, Callable[[dict[str, Any]], Any]]


@dataclass(frozen=True)
class Table:
    columns: list[Column]
    notes: list[str] = field(default_factory=list)  # how to read it, after the general notes


TABLES: Registry[Table] = Registry("benchmark table")


def column(stem: str, key: Key, show: Callable[[Any], Any] | None = None, *, forget: bool | None = None) -> Column:
    """(label, getter): the label is the stem and the ↑ / ↓ of the key's declared direction (reversed on
    the forget side: the forget split, or forget=True for a value measured on forget data); show
    turns the value into the printed one."""
    return f"{stem} {key.arrow(forget=forget)}", key if show is None else (lambda m: show(key.read(m)))


def plain(stem: str, key: Key, show: Callable[[Any], Any] | None = None) -> Column:
    """(label, getter) without a direction: a count, a statistic that has no better side."""
    return stem, key if show is None else (lambda m: show(key.read(m)))


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def x100(x: Any) -> float | None:
    """A [0, 1] score as the percentage the papers print."""
    v = _num(x)
    return None if v is None else 100.0 * v


def lm_eval_acc(task: str) -> Key:
    """The lm-evaluation-harness `acc` of one task (its `acc,none` entry)."""
    return metric_key("lm_eval", detail=f"tasks.{task}.acc,none")


_TRUTH_RATIO = metric_key("truth_ratio", "forget")
_TRUTH_STAT = metric_key("truth_ratio", "forget", "stat")
_OLD_TRUTH_STAT = metric_key("truth_ratio", "forget", "tofu_forget_stat")


def tofu_forget_truth_ratio(m: dict[str, Any]) -> Any:
    """TOFU's forget statistic mean min(R, 1/R): forget.truth_ratio, or in a metrics.json written before
    truth_ratio reported it there (no `stat` detail; truth_ratio then held max(0, 1 - R)), the
    old tofu_forget_stat detail."""
    return _TRUTH_RATIO.read(m) if _TRUTH_STAT.read(m) is not None else _OLD_TRUTH_STAT.read(m)


def first_of(*keys: Key) -> Callable[[dict[str, Any]], Any]:
    """A getter: the first of these values the run has (None when it has none)."""
    return lambda m: next((v for k in keys if (v := k.read(m)) is not None), None)


STEPS: Column = plain("steps", run_key("steps"))
_STAB: list[Column] = [
    plain("stab F", STABILITY["forget"]),
    column("stab R", STABILITY["retain"]),
    column("replay Δacc", metric_key("replay")),
]
BENCHMARK = run_key("benchmark")
SECONDS: Column = plain("seconds", run_key("timing.total_seconds"))
PRIVLEAK: Column = plain("PrivLeak (→0)", metric_key("privacy"))  # MUSE's PrivLeak (Min-40%): its ideal is 0

TABLES.register("wmdp")(Table(
    [STEPS,
     column("WMDP-Bio acc", lm_eval_acc("wmdp_bio"), forget=True),
     column("WMDP-Cyber acc", lm_eval_acc("wmdp_cyber"), forget=True),
     column("MMLU acc", lm_eval_acc("mmlu")),
     *_STAB, SECONDS],
    ["WMDP (as SEUF reports it): zero-shot lm-evaluation-harness accuracy on WMDP-Bio / -Cyber (chance 0.25) "
     "and MMLU; stab F / R: routing stability on the WMDP and MMLU questions."],
))
TABLES.register("muse")(Table(
    [STEPS,
     column("VerbMem D_f", metric_key("rouge_text", "forget"), x100),
     column("KnowMem D_f", metric_key("rouge_qa", "forget"), x100),
     column("KnowMem D_r", metric_key("rouge_qa", "retain"), x100),
     PRIVLEAK,
     *_STAB, SECONDS],
    # PrivLeak = (AUC - AUC_retrain) / AUC_retrain x 100, AUC with forget labelled 0 and holdout 1 and
    # low loss scored as member (muse_bench eval.py line 78, metrics/privleak.py lines 58-59 and 85-90):
    # a model that still knows the forget set ranks it above holdout, AUC -> 0, PrivLeak -> -100.
    ["MUSE's four criteria: VerbMem and KnowMem are ROUGE-L F1 x100 (as MUSE prints them); PrivLeak in "
     "MUSE's convention: 0 ideal (like the retrained model); very negative = the forget set looks MORE familiar "
     "than unseen data (under-unlearned, membership still leaks); positive = it looks less familiar "
     "(over-unlearned)."],
))
TABLES.register("tofu")(Table(
    [STEPS,
     column("forget quality", metric_key("forget_quality")),
     column("model utility", metric_key("tofu_model_utility")),
     column("forget ROUGE-L", metric_key("tofu_rouge", "forget")),
     ("forget truth ratio", tofu_forget_truth_ratio),
     *_STAB, SECONDS],
    ["TOFU: forget quality is the KS-test p-value against a retain-only model (needs `moe-unlearn eval "
     "--retrained`); model utility is TOFU's harmonic mean over retain, real authors and world facts; "
     "forget truth ratio is TOFU's forget statistic, mean min(R, 1/R): it rises towards 1 (truth and "
     "perturbations equally likely) as the model forgets."],
))
_RWKU_MMLU = metric_key("rwku_mmlu")
_UTILITY_GEN = first_of(_RWKU_MMLU, metric_key("utility_mc"))  # RWKU's MMLU subset, else the utility MC set
TABLES.register("rwku")(Table(
    [STEPS,
     *(column(f"forget {g}", metric_key("rwku_rouge", "forget", g), x100) for g in ("FB", "QA", "AA")),
     *(column(f"neighbor {g}", metric_key("rwku_rouge", "retain", g), x100) for g in ("FB", "QA")),
     column("MIA FM", metric_key("text_nll", "forget")),
     plain("MIA RM", metric_key("text_nll", "retain")),
     (f"utility Gen {_RWKU_MMLU.arrow()}", lambda m: x100(_UTILITY_GEN(m))),
     *_STAB, SECONDS],
    ["RWKU: forget (FB fill-in-the-blank, QA, AA adversarial) and neighbor probes are ROUGE-L recall x100; "
     "MIA FM / RM is the mean token loss on the forget / retain member texts (FM should rise, RM stay); "
     "utility Gen is RWKU's MMLU subset x100, scored as RWKU does (rwku_mmlu: few-shot, likeliest answer letter; "
     "else utility_mc, zero-shot choice likelihood). RWKU's Rea / Tru / Fac / Flu utility columns are not computed."],
))


def benchmark_of(metrics: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """The run's benchmark: config.yaml's `benchmark`, else metrics.json's."""
    name = (config or {}).get("benchmark") or BENCHMARK.read(metrics)
    return str(name) if name else None


def select_table(runs: list[Any]) -> Table | None:
    """The benchmark table when every run names the same registered benchmark, else None (default columns)."""
    names = {benchmark_of(r.metrics, r.config) for r in runs}
    if len(names) != 1:
        return None
    name = names.pop()
    return TABLES.get(name) if name is not None and name in TABLES else None
