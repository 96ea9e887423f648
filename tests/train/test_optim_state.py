"""train.optim_state_dtype: fp32 moments for bf16 weights, the same update as torch's AdamW, exact resume."""

from __future__ import annotations

import copy

import pytest
import torch

from moe_unlearn.errors import UserError
from moe_unlearn.train.config import TrainConfig
from moe_unlearn.train.optim import AdamWFp32State, build_optimizer


def _steps(opt: torch.optim.Optimizer, p: torch.Tensor, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()


def test_fp32_state_equals_torch_adamw_on_fp32_weights():
    a, b = torch.randn(64, generator=torch.Generator().manual_seed(1)), None
    b = a.clone()
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    _steps(torch.optim.AdamW([a], **kw), a, 5)
    _steps(AdamWFp32State([b], **kw), b, 5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_weights_keep_fp32_moments_and_resume_exactly():
    cfg = TrainConfig(lr=1e-3, optim_state_dtype="fp32")
    p = torch.randn(32).to(torch.bfloat16)
    opt = build_optimizer(cfg, [p])
    _steps(opt, p, 3)
    assert all(opt.state[p][k].dtype == torch.float32 for k in ("exp_avg", "exp_avg_sq"))
    q = p.clone()
    again = build_optimizer(cfg, [q])
    again.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint holds it
    assert again.state[q]["exp_avg"].dtype == torch.float32  # torch would cast them to bf16
    _steps(opt, p, 2, seed=7)
    _steps(again, q, 2, seed=7)
    assert torch.equal(p, q)
    plain = build_optimizer(TrainConfig(lr=1e-3), [r := torch.randn(4).to(torch.bfloat16)])
    _steps(plain, r, 1)
    assert plain.state[r]["exp_avg"].dtype == torch.bfloat16  # the default: the parameters' dtype


def test_unknown_state_dtype_is_a_user_error():
    from moe_unlearn.train.config import build_config

    with pytest.raises(UserError, match="optim_state_dtype"):
        build_config({"method": "ga", "data": {"forget": {"path": "f.jsonl", "kind": "text"}, "train_format": "text"},
                      "train": {"optim_state_dtype": "fp8"}})


def test_fused_adamw_only_for_moments_in_the_parameters_dtype():
    p = torch.randn(8)
    assert build_optimizer(TrainConfig(lr=1e-3), [p], fused=True).defaults["fused"] is True
    assert not build_optimizer(TrainConfig(lr=1e-3), [p]).defaults["fused"]
    fp32_state = build_optimizer(TrainConfig(lr=1e-3, optim_state_dtype="fp32"), [p], fused=True)
    assert isinstance(fp32_state, AdamWFp32State) and not fp32_state.defaults["fused"]
