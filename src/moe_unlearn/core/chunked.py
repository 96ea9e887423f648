"""Vocabulary-sized arithmetic in chunks: losses and scores without full-vocabulary logits.

At a real vocabulary (Qwen3: 151,936) a forward's float32 logits are B x S x V numbers, and a
plain cross-entropy adds a float32 copy, a log-softmax and their gradients. Here the model runs
with `logits_to_keep` empty (transformers then computes no logits at all); `lm_forward` keeps the
decoder's final hidden states [B, S, d] (what the LM head reads), and `ChunkedLogits` applies the
head to at most `chunk` rows at a time, only at the positions a loss or score reads (answer
tokens). With gradients, each chunk runs under activation checkpointing: backward recomputes
that chunk's logits instead of keeping them, so peak memory grows with the chunk, not with
B x S x V. Values and gradients are those of the unchunked computation (tests/core/test_chunked.py).

The head must be reproducible from the hidden states: the known logit scalings and soft-capping
(models/archs.py) are applied here; any other post-head transform is caught ONCE per model by
comparing the model's own logits at one position with the head's (a run then stops with a clear
error naming `loss_chunk=0`).
`chunk=0`, or a model without `logits_to_keep`, computes full logits as before (still one pass
over the scored rows, no copy of a sliced logits tensor).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from moe_unlearn.errors import RunFailure
from moe_unlearn.models.archs import LOGIT_SCALES, LOGIT_SOFTCAP

IGNORE = -100
Head = Callable[[torch.Tensor], torch.Tensor]  # [n, d] hidden rows -> [n, V] logits
Context = Callable[[], ContextManager[Any]]
# fn(logit rows [n, V] float32, flat row index [n], *per-row args) -> tuple of [n, ...] tensors
RowFn = Callable[..., tuple[torch.Tensor, ...]]

_NO_LOGITS = torch.empty(0, dtype=torch.long)  # logits_to_keep: no position
_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


@dataclass
class ChunkedLogits:
    """The logits of one forward, computed row by row on demand.

    Either `hidden` [B, S, d] plus `head`, or the model's own `logits` [B, S, V]. `grad`: whether
    rows carry gradients (False when the forward ran under no_grad, e.g. a reference forward).
    `contexts` are entered around every head call: bf16 autocast, and for a reference forward
    the original values of a trained head (the head runs after `ctx.reference()` has exited).
    """

    hidden: torch.Tensor | None = None
    head: Head | None = None
    logits: torch.Tensor | None = None
    chunk: int = 0  # rows per chunk; 0: all rows in one pass
    grad: bool = True
    contexts: Sequence[Context] = field(default_factory=tuple)

    @classmethod
    def of(cls, x: torch.Tensor | ChunkedLogits) -> ChunkedLogits:
        """Wrap a logits tensor [B, S, V] (tests, custom code); ChunkedLogits pass through."""
        return x if isinstance(x, ChunkedLogits) else cls(logits=x, grad=x.requires_grad)

    @property
    def shape(self) -> tuple[int, int]:
        """(B, S)."""
        src = self.logits if self.logits is not None else self.hidden
        return int(src.shape[0]), int(src.shape[1])

    def rows_of(self, rows: slice, seq: int) -> ChunkedLogits:
        """The logits of batch rows `rows`, first `seq` positions (one batch of a joint forward)."""
        if self.logits is not None:
            return replace(self, logits=self.logits[rows, :seq])
        return replace(self, hidden=self.hidden[rows, :seq].contiguous())

    @contextlib.contextmanager
    def _head_mode(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if not self.grad:
                stack.enter_context(torch.no_grad())
            for make in self.contexts:
                stack.enter_context(make())
            yield

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """float32 logits [n, V] of the flat positions `index` (b * S + t)."""
        if self.logits is not None:
            return self.logits.flatten(0, 1)[index].float()
        with self._head_mode():
            return self.head(self.hidden.flatten(0, 1)[index]).float()

    def full(self) -> torch.Tensor:
        """All logits [B, S, V] (materialised: for code that needs every position)."""
        if self.logits is not None:
            return self.logits
        with self._head_mode():
            return self.head(self.hidden)

    def map_rows(self, index: torch.Tensor, fn: RowFn, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """fn over the logit rows of `index`, `chunk` rows at a time; outputs concatenated.

        `args` are per-row tensors ([n, ...]) sliced with the rows. With gradients and more than
        one chunk, each chunk is checkpointed: its logits are freed after the forward and
        recomputed in backward. A logits tensor is read in one pass when gradients flow (its
        gradient is B x S x V anyway).
        """
        n = index.numel()
        grad = self.grad and torch.is_grad_enabled()
        size = n if self.chunk <= 0 or (grad and self.logits is not None) else self.chunk
        size = max(size, 1)
        recompute = grad and n > size
        parts: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, max(n, 1), size):
            idx = index[start:start + size]
            chunk_args = tuple(a[start:start + size] for a in args)
            if recompute:
                parts.append(checkpoint(self._apply, fn, idx, *chunk_args, use_reentrant=False,
                                        preserve_rng_state=False))
            else:
                parts.append(self._apply(fn, idx, *chunk_args))
        return tuple(torch.cat(outs) for outs in zip(*parts))

    def _apply(self, fn: RowFn, idx: torch.Tensor, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return fn(self.rows(idx), idx, *args)


LogitsLike = torch.Tensor | ChunkedLogits


# ---- positions aligned with labels ------------------------------------------------------------
def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """[B, S] bool: positions whose token is predicted and scored (labels != -100, t > 0)."""
    mask = labels != IGNORE
    mask[:, 0] = False
    return mask


def scored(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer_mask [B, S], flat logit row predicting each scored position: b * S + t - 1).

    Row-major order, so values per scored position land with `spread(values, mask)`.
    """
    mask = answer_mask(labels)
    b, t = mask.nonzero(as_tuple=True)
    return mask, b * labels.shape[1] + t - 1


def spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] values of the scored positions -> [B, S] (0 elsewhere), differentiable."""
    out = values.new_zeros(mask.shape)
    return out.masked_scatter(mask, values)


# ---- row functions ----------------------------------------------------------------------------
class _LabelLogProb(torch.autograd.Function):
    """log softmax(z)[target] per row of z [n, V]; backward builds ONE [n, V] tensor,
    g * (onehot - softmax), where autograd's log_softmax + gather would build several."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(z, dim=1)
        ctx.save_for_backward(z, target, lse)
        return z.gather(1, target[:, None]).squeeze(1) - lse

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, target, lse = ctx.saved_tensors
        grad = (z - lse[:, None]).exp_().mul_(-g[:, None])
        return grad.scatter_add_(1, target[:, None], g[:, None]), None


class _SoftCrossEntropy(torch.autograd.Function):
    """-sum_v q_v log softmax(z)_v per row (q [n, V] a fixed distribution, no gradient);
    backward builds one [n, V] tensor, g * (softmax(z) sum(q) - q)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(z, dim=1)
        ctx.save_for_backward(z, q, lse)
        return lse * q.sum(1) - (q * z).sum(1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, q, lse = ctx.saved_tensors
        grad = (z - lse[:, None]).exp_().mul_(q.sum(1)[:, None]).sub_(q)
        return grad.mul_(g[:, None]), None


class _KLFromReference(torch.autograd.Function):
    """KL(p_ref || softmax(z)) per row from reference log-probs [n, V] (no gradient); backward
    builds one [n, V] tensor, g * (softmax(z) - p_ref)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, ref_logp)
        return (ref_logp.exp() * (ref_logp - F.log_softmax(z, dim=1))).sum(dim=1)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, ref_logp = ctx.saved_tensors
        grad = F.log_softmax(z, dim=1).exp_().sub_(ref_logp.exp())
        return grad.mul_(g[:, None]), None


def _label_logprob(z: torch.Tensor, idx: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor]:
    return (_LabelLogProb.apply(z, target),)


def label_logprobs(lm: LogitsLike, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[b, t] | tokens < t) [B, S], aligned with labels, 0 off scored positions."""
    lm = ChunkedLogits.of(lm)
    mask, rows = scored(labels)
    (lp,) = lm.map_rows(rows, _label_logprob, labels[mask])
    return spread(lp, mask)


def soft_cross_entropy(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_v target_v log softmax(z)_v per row: [n, V] logits and target distributions -> [n]."""
    return _SoftCrossEntropy.apply(z, target.detach())


def token_kl(ref: LogitsLike, lm: LogitsLike, labels: torch.Tensor) -> torch.Tensor:
    """KL(pi_ref || pi_theta) per token [B, S] at scored positions (0 elsewhere), aligned with labels.

    The reference rows are computed inside each chunk too (no grad), so neither side's
    full-vocabulary logits exist at once.
    """
    ref, lm = ChunkedLogits.of(ref), ChunkedLogits.of(lm)
    mask, rows = scored(labels)

    def kl(z: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor]:
        return (_KLFromReference.apply(z, F.log_softmax(ref.rows(idx).detach(), dim=1)),)

    (values,) = lm.map_rows(rows, kl)
    return spread(values, mask)


# ---- running the model ------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under DDP / peft wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            base = model.get_base_model()
            if base is model:
                return model
            model = base
        else:
            return model


def forward_takes(model: nn.Module, name: str) -> bool:
    """Whether the transformers model under any DDP / peft wrapper takes keyword `name` (the
    wrappers pass their keywords through)."""
    return name in inspect.signature(_unwrap(model).forward).parameters


def no_logits(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Forward kwargs that skip the LM head (a pass run only for routing or hidden states)."""
    return {"logits_to_keep": _NO_LOGITS.to(device)} if forward_takes(model, "logits_to_keep") else {}


def output_embedding(model: nn.Module) -> nn.Module:
    """The model's output embedding (LM head) module, below any data-parallel or peft wrapper."""
    linear = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return linear or _unwrap(model).get_output_embeddings()


def output_head(model: nn.Module) -> Head:
    """The function from final hidden states to logits: the output embedding (LoRA included)
    followed by the architecture's known logit scaling and soft-capping (models/archs.py)."""
    base = _unwrap(model)
    linear = output_embedding(model)
    config = base.config.get_text_config()
    scales = [(getattr(config, key), how) for key, how in LOGIT_SCALES.items()
              if isinstance(getattr(config, key, None), (int, float)) and getattr(config, key) != 1]
    cap = getattr(config, LOGIT_SOFTCAP, None)
    if not scales and not cap:
        return linear

    def head(h: torch.Tensor) -> torch.Tensor:
        z = linear(h)
        for value, how in scales:
            z = z * value if how == "multiply" else z / value
        return torch.tanh(z.float() / cap) * cap if cap else z

    return head


def _decoder(model: nn.Module) -> nn.Module:
    """The module whose output's last_hidden_state the LM head reads."""
    base = _unwrap(model)
    decoder = base.get_decoder()
    return base.model if decoder is base and isinstance(getattr(base, "model", None), nn.Module) else decoder


@contextlib.contextmanager
def _final_hidden(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Holds the decoder's last hidden state of the forward run inside the block."""
    held: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        held.clear()
        held.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])

    handle = _decoder(model).register_forward_hook(hook)
    try:
        yield held
    finally:
        handle.remove()


def lm_forward(model: nn.Module, inputs: dict[str, Any], *, chunk: int,
               contexts: Sequence[Context] = ()) -> tuple[Any, ChunkedLogits]:
    """Run model(**inputs) and return (its output, its logits as ChunkedLogits).

    chunk > 0 and a model that takes `logits_to_keep`: no logits are computed in the forward;
    the output's `.logits` is empty and the rows come from the final hidden states. Otherwise
    the model computes its full logits as usual. `contexts`: see ChunkedLogits.
    """
    grad = torch.is_grad_enabled()
    if chunk <= 0 or not forward_takes(model, "logits_to_keep"):
        out = model(**inputs)
        return out, ChunkedLogits(logits=out.logits, chunk=chunk, grad=grad, contexts=contexts)
    verify = model not in _VERIFIED
    ids = inputs["input_ids"]
    keep = {"logits_to_keep": torch.tensor([ids.shape[1] - 1], device=ids.device)} if verify else no_logits(model, ids.device)
    with _final_hidden(model) as held:
        out = model(**inputs, **keep)
    lm = ChunkedLogits(hidden=held[0], head=output_head(model), chunk=chunk, grad=grad, contexts=contexts)
    if verify:
        _verify_head(model, lm, out.logits)
    return out, lm


@torch.no_grad()
def _verify_head(model: nn.Module, lm: ChunkedLogits, last: torch.Tensor) -> None:
    """The head applied here must give the model's own logits (at the last position)."""
    b, s = lm.shape
    mine = lm.rows(torch.arange(b, device=last.device) * s + s - 1)
    theirs = last.reshape(b, -1).float()
    tol = 1e-5 if last.dtype == torch.float32 else 1e-2
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=tol, atol=tol * float(theirs.abs().max())):
        raise RunFailure(f"{type(_unwrap(model)).__name__} transforms its logits after the LM head in a way this "
                         "toolkit does not reproduce; set train.loss_chunk=0 and eval.loss_chunk=0 (full logits)")
    _VERIFIED[model] = True


__all__ = ["ChunkedLogits", "LogitsLike", "answer_mask", "label_logprobs", "lm_forward", "no_logits", "output_embedding",
           "output_head", "scored",
           "soft_cross_entropy", "spread", "token_kl"]
