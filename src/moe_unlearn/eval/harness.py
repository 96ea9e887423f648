"""lm-evaluation-harness bridge: run any task list on the in-memory model.

HFLM(pretrained=<model object>, tokenizer=...) wraps the model without reloading it;
TaskManager(include_path=...) adds local task YAMLs (e.g. a JSONL-backed task, fully offline).
WMDP / MMLU work when their data are reachable (online or in the HF cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moe_unlearn.errors import UserError
from moe_unlearn.hub import offline_reason, stay_offline
from moe_unlearn.eval.context import EvalContext
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    limit: int | None = None,
    include_path: str | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from lm_eval.simple_evaluate (numeric entries only)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install 'moe-unlearn[lmeval]'") from None
    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"lm_eval.include_path '{include_path}' is not a directory of task YAML files")
    if offline_reason() is not None:
        stay_offline()  # the tasks' datasets come from the cache, without the hub client's retries
    # Indexing lm-eval's thousands of built-in task YAMLs takes tens of seconds: skip it when
    # the local folder has every task asked for.
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=include_path)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        raise UserError(f"unknown lm-eval task(s) {', '.join(missing)}: check the names or set lm_eval.include_path")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(next(model.parameters()).device))
    out = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        limit=limit,
        num_fewshot=num_fewshot,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=0,
    )
    results = (out or {}).get("results", {})
    return {
        task: {k: float(v) for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for task, vals in results.items()
    }


@metric("lm_eval", higher_is_better=True, scope="global", multi_process=False, detail_keys=("tasks",))
def lm_eval(ctx: EvalContext) -> MetricResult | None:
    """lm-evaluation-harness tasks (eval.lm_eval.tasks); value = mean of each task's first acc."""
    c = ctx.cfg.lm_eval
    res = run_lm_eval(
        ctx.model, ctx.tokenizer, c.tasks, limit=c.limit, include_path=c.include_path, batch_size=c.batch_size, num_fewshot=c.num_fewshot
    )
    accs = [next((v for k, v in vals.items() if k.startswith("acc,")), float("nan")) for vals in res.values()]
    return MetricResult(nanmean(accs), accs, {"tasks": res})
