"""Chunked vocabulary arithmetic equals the unchunked one (values and gradients) and keeps its
largest tensor at chunk x V; lm_forward reproduces every tiny architecture's logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from moe_unlearn.core import chunked, losses
from moe_unlearn.core.chunked import ChunkedLogits
from moe_unlearn.errors import RunFailure
from moe_unlearn.eval.scores import token_stats
from moe_unlearn.models.tiny import GENERIC_ARCHS, TINY_ARCHS, tiny_model

B, S, D, V = 3, 7, 8, 11


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, D, generator=g, requires_grad=True)
    head = torch.nn.Linear(D, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, D, generator=g))
    labels = torch.randint(0, V, (B, S), generator=g)
    labels[0, :3] = -100  # a prompt
    labels[2, 5:] = -100  # padding
    labels[1, 2] = -100  # a hole
    return hidden, head, labels


def _full_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The textbook shifted cross-entropy [B, S] aligned with labels (reference implementation)."""
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none")
    return torch.cat([torch.zeros(B, 1), ce.view(B, S - 1)], dim=1)


def _grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, tensors, retain_graph=True))


@pytest.mark.parametrize("chunk", [1, 2, 5, 256])
def test_chunked_cross_entropy_matches_full_values_and_gradients(chunk):
    hidden, head, labels = _problem()
    weights = torch.rand(B, S)
    full = _full_ce(head(hidden), labels)
    expected = losses.weighted_token_mean(full, losses.answer_mask(labels), weights)
    lm = ChunkedLogits(hidden=hidden, head=head, chunk=chunk)
    ce = losses.token_ce(lm, labels)
    got = losses.answer_nll(lm, labels, weights)
    assert torch.allclose(ce, full, atol=1e-6)
    assert torch.allclose(got, expected, atol=1e-6)
    for a, b in zip(_grads(got, hidden, head.weight), _grads(expected, hidden, head.weight)):
        assert torch.allclose(a, b, atol=1e-6)
    nll, count = losses.sequence_nll(lm, labels)
    assert torch.allclose(nll, full.sum(1), atol=1e-5) and count.tolist() == losses.answer_mask(labels).sum(1).tolist()


def test_logits_tensor_path_matches_and_gives_gradients():
    hidden, head, labels = _problem(1)
    logits = head(hidden)
    got = losses.answer_nll(logits, labels)
    expected = losses.weighted_token_mean(_full_ce(logits, labels), losses.answer_mask(labels))
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(_grads(got, hidden)[0], _grads(expected, hidden)[0], atol=1e-6)


@pytest.mark.parametrize("chunk", [2, 0])
def test_chunked_kl_matches_full_values_and_gradients(chunk):
    hidden, head, labels = _problem(2)
    ref_hidden = (hidden + 0.3 * torch.randn(B, S, D)).detach()
    ref_head = torch.nn.Linear(D, V, bias=False)
    full_ref, full = ref_head(ref_hidden).detach(), head(hidden)
    p, q = F.log_softmax(full_ref[:, :-1], -1), F.log_softmax(full[:, :-1], -1)
    token = torch.cat([torch.zeros(B, 1), (p.exp() * (p - q)).sum(-1)], dim=1)
    expected = losses.weighted_token_mean(token, losses.answer_mask(labels))
    with torch.no_grad():
        ref = ChunkedLogits(hidden=ref_hidden, head=ref_head, chunk=chunk, grad=False)
    got = losses.masked_kl(ref, ChunkedLogits(hidden=hidden, head=head, chunk=chunk), labels)
    assert torch.allclose(got, expected, atol=1e-6)
    for a, b in zip(_grads(got, hidden, head.weight), _grads(expected, hidden, head.weight)):
        assert torch.allclose(a, b, atol=1e-6)
    assert ref_head.weight.grad is None  # the reference side never enters the graph


def test_token_stats_chunked_equal_full_including_min_k_plus_plus_moments():
    hidden, head, labels = _problem(3)
    with torch.no_grad():
        full = token_stats(head(hidden), labels, moments=True)
        part = token_stats(ChunkedLogits(hidden=hidden, head=head, chunk=2, grad=False), labels, moments=True)
    logp = F.log_softmax(head(hidden).detach()[:, :-1], -1)
    mask = losses.answer_mask(labels)[:, 1:]
    expected_lp = logp.gather(-1, labels[:, 1:].clamp_min(0)[..., None]).squeeze(-1)
    for b in range(B):
        assert torch.allclose(full.logp[b], expected_lp[b][mask[b]], atol=1e-6)
        for name in ("logp", "mu", "sigma"):
            assert torch.allclose(getattr(part, name)[b], getattr(full, name)[b], atol=1e-6)
        assert torch.equal(part.correct[b], full.correct[b])
    assert [len(x) for x in part.logp] == mask.sum(1).tolist()


class LargestTensor(TorchDispatchMode):
    """Largest numel of any tensor an op creates inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_larger_than_a_chunk_of_logits_in_forward_and_backward():
    """With a large vocabulary the biggest tensor of loss + backward is chunk x V, not rows x V."""
    vocab, rows, chunk = 5000, 40, 4
    hidden = torch.randn(2, rows // 2 + 1, 2, requires_grad=True)
    head = torch.nn.Linear(2, vocab, bias=False)  # its weight (and gradient) is smaller than a chunk
    labels = torch.randint(0, vocab, (2, rows // 2 + 1))
    with LargestTensor() as mode:
        loss = losses.answer_nll(ChunkedLogits(hidden=hidden, head=head, chunk=chunk), labels)
        loss.backward()
    assert mode.largest <= chunk * vocab
    head.weight.grad = None
    with LargestTensor() as full:
        losses.answer_nll(head(hidden), labels).backward()
    assert full.largest >= rows * vocab  # the unchunked loss holds every row's logits


@pytest.mark.parametrize("arch", TINY_ARCHS + GENERIC_ARCHS)
def test_lm_forward_reproduces_the_model_logits(arch):
    model = tiny_model(arch, vocab=300)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        expected = model(**inputs).logits
        try:
            out, lm = chunked.lm_forward(model, inputs, chunk=4)
        except RunFailure as err:  # a post-head transform this module does not reproduce: refused, not wrong
            pytest.fail(f"{arch}: {err}")
        assert out.logits.numel() < expected.numel()  # the forward itself computed (almost) no logits
        assert torch.allclose(lm.full(), expected, atol=1e-5)
        again = chunked.lm_forward(model, inputs, chunk=4)[0]
        assert again.logits.numel() == 0  # verified once: later forwards compute no logits at all
        out0, lm0 = chunked.lm_forward(model, inputs, chunk=0)
        assert lm0.logits is out0.logits and torch.allclose(out0.logits, expected)


def test_an_unreproducible_head_is_refused_with_a_clear_error():
    model = tiny_model("olmoe", seed=1)
    plain = model.forward

    def scaled(*args, logits_to_keep=0, **kwargs):  # a post-head transform the toolkit does not know
        out = plain(*args, logits_to_keep=logits_to_keep, **kwargs)
        out.logits = out.logits * 3.0
        return out

    model.forward = scaled
    with torch.no_grad(), pytest.raises(RunFailure, match="loss_chunk=0"):
        chunked.lm_forward(model, {"input_ids": torch.randint(3, 200, (1, 5))}, chunk=2)
