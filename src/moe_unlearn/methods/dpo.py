"""IdkDPO: prefer a refusal answer (y_w) over the true forget answer (y_l).

L_f = -(2/beta) mean log sigmoid(beta [(log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l)]).
Reference log-probs of both answers are computed once in prepare(). The refusal for an
example is refusals[index % len(refusals)], spliced after the example's prompt tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from moe_unlearn.config import require
from moe_unlearn.data.tokenize import pad_id
from moe_unlearn.core import losses
from moe_unlearn.methods.base import METHODS, Batch, Method, RetainConfig, reference_logps

DEFAULT_REFUSALS = [
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I can't answer that.",
    "That is unknown to me.",
]


@dataclass
class DPOConfig(RetainConfig):
    beta: float = 0.1
    refusals: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSALS))

    def validate(self, where: str) -> None:
        super().validate(where)
        require(self.beta > 0, f"'{where}.beta' must be > 0, got {self.beta}")
        require(
            bool(self.refusals) and all(r.strip() for r in self.refusals),
            f"'{where}.refusals' must be a non-empty list of non-empty answers",
        )


def dpo_loss(win: torch.Tensor, lose: torch.Tensor, beta: float) -> torch.Tensor:
    """[B] log-ratios (log pi - log pi_ref) of preferred and dispreferred answers -> scalar."""
    return -(2.0 / beta) * F.logsigmoid(beta * (win - lose)).mean()


def replace_answers(batch: Batch, answers: list[list[int]], pad_id: int, eos_id: int | None) -> Batch:
    """Keep each row's prompt, put answers[row] (token ids) after it; right-padded.

    The true answer's trailing EOS (when labelled) is kept after the new answer too.
    """
    rows, row_labels = [], []
    for ids, mask, labels, answer in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], answers):
        ids, labels = ids[mask.bool()], labels[mask.bool()]
        scored = (labels != losses.IGNORE).nonzero()
        start = int(scored[0]) if len(scored) else len(ids)
        tail = [eos_id] if eos_id is not None and len(scored) and int(labels[scored[-1]]) == eos_id else []
        new = answer + tail
        rows.append(ids[:start].tolist() + new)
        row_labels.append([losses.IGNORE] * start + new)
    width = max(len(r) for r in rows)
    dev = batch["input_ids"].device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=dev)
    attention = torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype, device=dev)
    labels = torch.full((len(rows), width), losses.IGNORE, dtype=torch.long, device=dev)
    for i, (r, lab) in enumerate(zip(rows, row_labels)):
        input_ids[i, : len(r)] = torch.tensor(r, device=dev)
        attention[i, : len(r)] = 1
        labels[i, : len(r)] = torch.tensor(lab, device=dev)
    return {**batch, "input_ids": input_ids, "attention_mask": attention, "labels": labels}


@METHODS.register("dpo")
class DPO(Method):
    name = "dpo"
    shares_forward = True
    config_cls = DPOConfig

    def refusal_batch(self, ctx, batch: Batch) -> Batch:
        """The forget batch with each true answer replaced by a refusal."""
        tok = ctx.tokenizer
        space = self._leading_space(tok, batch)
        answers = [
            tok.encode(space + self.cfg.refusals[int(i) % len(self.cfg.refusals)], add_special_tokens=False)
            for i in batch["index"]
        ]
        return replace_answers(batch, answers, pad_id(tok), tok.eos_token_id)

    @staticmethod
    def _leading_space(tok, batch: Batch) -> str:
        """' ' when the data's answers start with a space-prefixed token (byte-level BPE)."""
        labels = batch["labels"][0]
        scored = labels[labels != losses.IGNORE]
        if len(scored) == 0:
            return " "
        return " " if tok.decode([int(scored[0])]).startswith(" ") else ""

    def prepare(self, ctx) -> None:
        self.ref_lose = reference_logps(ctx)
        self.ref_win = reference_logps(ctx, self.refusal_batch)

    def forget_loss(self, ctx, forget: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx = forget["index"]
        lose_nll, _ = losses.sequence_nll(ctx.forward(forget, role="forget").lm, forget["labels"])
        idk = self.refusal_batch(ctx, forget)
        win_nll, _ = losses.sequence_nll(ctx.forward(idk, role="forget_refusal").lm, idk["labels"])
        win, lose = -win_nll - self.ref_win[idx], -lose_nll - self.ref_lose[idx]
        loss = dpo_loss(win, lose, self.cfg.beta)
        return loss, {"reward_margin": float((win - lose).detach().mean())}
