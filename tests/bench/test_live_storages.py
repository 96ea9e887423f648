"""bench.memory.live_storages counts the real storages alive in the process, also after
torch.compile has run in it (its caches keep fake tensors, which have no memory to count)."""

from __future__ import annotations

import torch

from bench.memory import live_storages


def test_live_storages_counts_real_storages_after_a_compile():
    x = torch.randn(8, requires_grad=True)
    torch.autograd.grad(torch.compile(lambda t: (t * 2).sin().sum(), backend="aot_eager")(x), x)
    real = torch.empty(4096)
    seen = live_storages()  # raised "Cannot access data pointer of Tensor" with the compile's fake tensors alive
    ptr = real.untyped_storage().data_ptr()
    assert ptr in seen and seen[ptr][1] == real.untyped_storage().nbytes()
