"""Routing metrics: stability against the original model, activation frequencies, replay attack.

Stability on a set D (methods.md section 6): mean over MoE layers and non-padding tokens of
|S_orig(x) ∩ S_new(x)| / k, where S is the top-k expert set, on identical inputs. Captures hold
this process's rows (eval/context.py); token sums and counts are summed over processes and
per-example values gathered, so every process reports the numbers one process would.
"""

from __future__ import annotations

import torch

from moe_unlearn.core.dist import all_reduce_sum, gather_objects
from moe_unlearn.errors import UserError
from moe_unlearn.eval.context import SPLITS, EvalContext
from moe_unlearn.eval.knowledge import answer_nll, answer_prob, token_accuracy
from moe_unlearn.eval.metric import MetricResult, metric
from moe_unlearn.eval.scores import nanmean
from moe_unlearn.models import replay_routing


def topk_overlap(orig: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """|S_orig ∩ S_new| / k per token: indices [T, k] each (no repeats in a row) -> [T]."""
    k = orig.size(-1)
    hits = (orig.unsqueeze(-1) == new.to(orig.device).unsqueeze(-2)).any(-1)  # [T, k]
    return hits.float().sum(-1) / k


def activation_frequency(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """f_e = share of tokens (of every process) whose top-k contains e: indices [T, k] -> [E] (sums to k)."""
    counts = all_reduce_sum(torch.bincount(indices.reshape(-1).long().cpu(), minlength=num_experts).double())
    tokens = float(all_reduce_sum(torch.tensor(float(indices.size(0)), dtype=torch.float64)))
    return counts / max(tokens, 1.0)


def _layers(capture) -> list:
    return list(capture.layers)


def _check_same_tokens(orig, new, split: str) -> None:
    a, b = _layers(orig), _layers(new)
    if len(a) != len(b) or any(x.indices.shape != y.indices.shape for x, y in zip(a, b)):
        raise UserError(
            f"the original routing for '{split}' was captured on different inputs or another layout "
            "(token counts differ); capture it with capture_eval_routing using the same data and eval config"
        )


def stability_per_layer(orig, new) -> torch.Tensor:
    """[L, T] top-k overlap of every layer and token between two captures of the same inputs."""
    return torch.stack([topk_overlap(a.indices.cpu(), b.indices.cpu()) for a, b in zip(_layers(orig), _layers(new))])


@metric("stability", higher_is_better=True, cacheable=False, group="routing", detail_keys=("per_layer",))
def stability(ctx: EvalContext, split: str) -> MetricResult | None:
    """Routing stability vs the original model (share of original top-k kept), per layer."""
    if not ctx.original_routing or split not in ctx.original_routing:
        return None
    qa = ctx.qa_pass(split)
    if qa is None:
        return None
    orig = ctx.original_routing[split]
    _check_same_tokens(orig, qa.routing, split)
    overlap = stability_per_layer(orig, qa.routing).double()  # [L, T] this process's tokens
    tokens = float(all_reduce_sum(torch.tensor(float(overlap.shape[1]), dtype=torch.float64)))
    per_layer = all_reduce_sum(overlap.sum(1)) / max(tokens, 1.0)
    lengths = [int(n) for c in range(len(qa.routing.calls)) for n in qa.routing.token_mask(c).sum(1).tolist()]
    rows = [i for call in qa.rows for i in call]
    mine = [(i, float(x.mean())) for i, x in zip(rows, torch.split(overlap.mean(0), lengths)) if i >= 0]
    per_example = [v for _, v in sorted(gather_objects(mine))]
    return MetricResult(float(per_layer.mean()), per_example, {"per_layer": [float(x) for x in per_layer]})


@metric("activation", higher_is_better=False, scope="global", cacheable=False, group="routing", value_key="shift",
        detail_keys=SPLITS)
def activation(ctx: EvalContext) -> MetricResult | None:
    """Expert activation frequencies before/after per split and layer; value = mean shift.

    details[split] = {"before": [L][E], "after": [L][E], "delta": [L][E]}; the value is the
    mean over splits and layers of the total-variation distance sum_e |after - before| / (2k).
    """
    if not ctx.original_routing:
        return None
    details: dict[str, dict[str, list]] = {}
    shifts: list[float] = []
    for split in SPLITS:
        qa = ctx.qa_pass(split)
        if qa is None or split not in ctx.original_routing:
            continue
        orig = ctx.original_routing[split]
        _check_same_tokens(orig, qa.routing, split)
        before, after = [], []
        for a, b in zip(_layers(orig), _layers(qa.routing)):
            e = a.logits.size(-1)
            before.append(activation_frequency(a.indices, e))
            after.append(activation_frequency(b.indices, e))
            shifts.append(float((after[-1] - before[-1]).abs().sum() / (2 * a.indices.size(-1))))
        details[split] = {
            "before": [x.tolist() for x in before],
            "after": [x.tolist() for x in after],
            "delta": [(y - x).tolist() for x, y in zip(before, after)],
        }
    if not details:
        return None
    return MetricResult(nanmean(shifts), shifts, details)


@metric("replay", higher_is_better=False, scope="global", cacheable=False,
        detail_keys=("without", "with_replay", "recovery"))
def replay(ctx: EvalContext) -> MetricResult | None:
    """Routing-replay attack: forget metrics with the ORIGINAL selections and weights replayed.

    value = token_acc(with replay) - token_acc(without): knowledge that comes back when the
    original routing is restored, i.e. forgetting done by re-routing rather than erasure.
    """
    if not ctx.original_routing or "forget" not in ctx.original_routing:
        return None
    qa = ctx.qa_pass("forget")
    if qa is None:
        return None
    orig = ctx.original_routing["forget"]
    _check_same_tokens(orig, qa.routing, "forget")
    with replay_routing(ctx.model, orig):
        replayed = ctx.score(ctx.qa_batches("forget"), desc="replay forget QA")
    without = {"nll": nanmean(answer_nll(qa.stats)), "prob": nanmean(answer_prob(qa.stats)), "token_acc": nanmean(token_accuracy(qa.stats))}
    per = token_accuracy(replayed)
    with_replay = {"nll": nanmean(answer_nll(replayed)), "prob": nanmean(answer_prob(replayed)), "token_acc": nanmean(per)}
    recovery = {k: with_replay[k] - without[k] for k in without}
    return MetricResult(recovery["token_acc"], per, {"without": without, "with_replay": with_replay, "recovery": recovery})
