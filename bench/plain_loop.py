"""The training loop a user would write for each base method: transformers + torch, no toolkit.

It is the baseline of every `full_depth` ratio. Each loss is the method's published objective
computed the plain way: the model's own forward over whole logits, torch's cross-entropy, a
frozen deep copy as the reference where the method compares with the original model (NPO,
IdkDPO, UNDIAL, RMU: what open-unlearning's trainers and WMDP's RMU script keep), torch's
AdamW with the engine's lr, betas and clipping, fp32. It reads only the settings of the run it
is compared with (the method's config, the optimizer's), RMU's steering vector and IdkDPO's
refusals as the run's tokenizer encodes them, so that
`tests/bench/test_plain_loop.py` can check that each loss equals the engine's on the same batch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from moe_unlearn.data.tokenize import to_device

IGNORE = -100
Batch = dict[str, torch.Tensor]


def shifted(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, S-1, V] predicting each next token, its labels [B, S-1])."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return logits, batch["labels"][:, 1:]


def token_nll(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token NLL [B, S-1], 0 off the labelled tokens; the labelled-token mask)."""
    logits, labels = shifted(model, batch)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return nll, labels != IGNORE


def sequence_nll(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL summed over each row's labelled tokens [B], their count [B])."""
    nll, mask = token_nll(model, batch)
    return nll.sum(1), mask.sum(1)


class PlainLoop:
    """One optimizer step of a method on the engine's batches (`pairs`, a Trainer's), with the
    engine's optimizer settings (`cfg`, its train section) and the method's (`method_cfg`)."""

    def __init__(self, model: torch.nn.Module, method: str, pairs: Any, cfg: Any, method_cfg: Any, *,
                 extra: dict[str, Any] | None = None) -> None:
        self.model, self.method, self.mcfg = model, method, method_cfg
        self.objective = OBJECTIVES[method]
        self.extra = extra or {}  # what the engine drew at random or read from the tokenizer (RMU, IdkDPO)
        self.reference = (copy.deepcopy(model).eval().requires_grad_(False)
                          if method in NEEDS_REFERENCE else None)
        self.opt = torch.optim.AdamW(self.trained(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.pairs, self.clip, self.i = pairs, cfg.max_grad_norm or 1e9, 0

    @classmethod
    def load(cls, model_dir: Path, method: str, trainer: Any) -> PlainLoop:
        """From a saved model (float32, train mode), on the Trainer's batches and settings."""
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
        m, tok = trainer.method, trainer.ctx.tokenizer
        extra: dict[str, Any] = {"control": m.control} if method == "rmu" else {}
        if method == "dpo":  # the refusals tokenized as the answers are: after a space when theirs start with one
            labels = trainer.pairs.batch(0)[0]["labels"][0]
            space = " " if tok.decode([int(labels[labels != IGNORE][0])]).startswith(" ") else ""
            extra = {"refusal_ids": [tok.encode(space + r, add_special_tokens=False) for r in m.cfg.refusals],
                     "pad_id": tok.pad_token_id, "eos_id": tok.eos_token_id}
        return cls(model, method, trainer.pairs, trainer.cfg, m.cfg, extra=extra)

    def trained(self) -> list[torch.nn.Parameter]:
        """Every parameter, or RMU's decoder layers layer-2..layer (its default, as WMDP trains a few
        layers), the rest then frozen (requires_grad off) so that its backward stops there too."""
        if self.method != "rmu":
            return list(self.model.parameters())
        layers = self.model.model.layers[max(0, self.mcfg.layer - 2):self.mcfg.layer + 1]
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = [p for layer in layers for p in layer.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def loss(self, forget: Batch, retain: Batch | None) -> torch.Tensor:
        return self.objective(self, forget, retain)

    def retained(self, forget_loss: torch.Tensor, retain: Batch | None) -> torch.Tensor:
        """gamma * forget loss + alpha * retain NLL (transformers' own loss), as open-unlearning's trainers."""
        if retain is None or getattr(self.mcfg, "alpha", 0) == 0:
            return forget_loss
        return self.mcfg.gamma * forget_loss + self.mcfg.alpha * self.model(**retain).loss

    def step(self) -> None:
        forget, retain = (to_device(b, self.model.device) if b is not None else None for b in self.pairs.batch(self.i))
        self.i += 1
        self.loss(forget, retain).backward()
        torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], self.clip)
        self.opt.step()
        # gradients dropped right after the step, as transformers' Trainer loop does (model.zero_grad()
        # after optimizer.step()) and as the engine does: with one loop holding its gradients between
        # steps and the other not, the interleaved timings measure which loop gets the other's freed
        # memory (GA: 0.987 vs 0.848 with the engine alone changed; each loop alone: equal times)
        self.opt.zero_grad(set_to_none=True)


def ga(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    return -loop.model(**forget).loss


def graddiff(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    return loop.retained(-loop.model(**forget).loss, retain)


def npo(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    nll, _ = sequence_nll(loop.model, forget)
    with torch.no_grad():
        ref, _ = sequence_nll(loop.reference, forget)
    beta = loop.mcfg.beta
    return loop.retained(-2 / beta * F.logsigmoid(-beta * (ref - nll)).mean(), retain)


def simnpo(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    nll, count = sequence_nll(loop.model, forget)
    c = loop.mcfg
    return loop.retained(-2 / c.beta * F.logsigmoid(c.beta * (nll / count.clamp_min(1) - c.delta)).mean(), retain)


def wga(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    nll, mask = token_nll(loop.model, forget)
    weights = torch.exp(-loop.mcfg.beta * nll.detach())
    return loop.retained(-(weights * nll).sum() / mask.sum(), retain)


def undial(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    logits, labels = shifted(loop.model, forget)
    mask = labels != IGNORE
    with torch.no_grad():
        ref, _ = shifted(loop.reference, forget)
        target = (ref[mask] - loop.mcfg.beta * F.one_hot(labels[mask], ref.shape[-1])).softmax(-1)
    return loop.retained(-(target * logits[mask].log_softmax(-1)).sum(-1).mean(), retain)


def refusals(loop: PlainLoop, batch: Batch) -> Batch:
    """The batch with each answer replaced by refusal[index % n] (its EOS kept): a DPO collator."""
    ids_out, labels_out = [], []
    for ids, mask, labels, i in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["index"]):
        ids, labels = ids[mask.bool()].tolist(), labels[mask.bool()].tolist()
        start = next((k for k, x in enumerate(labels) if x != IGNORE), len(ids))
        answer = loop.extra["refusal_ids"][int(i) % len(loop.extra["refusal_ids"])]
        tail = [loop.extra["eos_id"]] if start < len(ids) and labels[-1] == loop.extra["eos_id"] else []
        ids_out.append(ids[:start] + answer + tail)
        labels_out.append([IGNORE] * start + answer + tail)
    width = max(map(len, ids_out))
    pad = loop.extra["pad_id"]
    return {"input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids_out]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids_out]),
            "labels": torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels_out])}


def dpo(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    idk = to_device(refusals(loop, forget), loop.model.device)
    lose, _ = sequence_nll(loop.model, forget)
    win, _ = sequence_nll(loop.model, idk)
    with torch.no_grad():
        ref_lose, _ = sequence_nll(loop.reference, forget)
        ref_win, _ = sequence_nll(loop.reference, idk)
    beta = loop.mcfg.beta
    margin = (ref_win - win) - (ref_lose - lose)  # (log pi - log pi_ref)(refusal) - (the same)(answer)
    return loop.retained(-2 / beta * F.logsigmoid(beta * margin).mean(), retain)


def layer_output(model: torch.nn.Module, layer: int, batch: Batch) -> torch.Tensor:
    """The output of decoder layer `layer` (a forward hook over the whole forward, as WMDP's script)."""
    seen: list[torch.Tensor] = []
    handle = model.model.layers[layer].register_forward_hook(
        lambda m, a, out: seen.append(out[0] if isinstance(out, (tuple, list)) else out))
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.remove()
    return seen[0]


def rmu(loop: PlainLoop, forget: Batch, retain: Batch | None) -> torch.Tensor:
    c = loop.mcfg

    def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((h - target).pow(2).mean(-1) * mask).sum() / mask.sum()

    f_mask = forget["attention_mask"].float()
    loss = masked_mse(layer_output(loop.model, c.layer, forget), loop.extra["control"], f_mask)
    if retain is None or c.alpha == 0:
        return loss
    with torch.no_grad():
        ref = layer_output(loop.reference, c.layer, retain)
    return loss + c.alpha * masked_mse(layer_output(loop.model, c.layer, retain), ref, retain["attention_mask"].float())


OBJECTIVES: dict[str, Callable[[PlainLoop, Batch, Batch | None], torch.Tensor]] = {
    "ga": ga, "graddiff": graddiff, "npo": npo, "simnpo": simnpo, "wga": wga, "undial": undial, "dpo": dpo, "rmu": rmu}
NEEDS_REFERENCE = ("npo", "undial", "dpo", "rmu")
