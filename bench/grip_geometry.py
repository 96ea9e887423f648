"""GRIP projector memory at Qwen3-30B-A3B router geometry, extrapolated from one real-sized layer.

One layer: d = 2048, E = 128 experts, top-8, 32k retained tokens. The router inputs are
synthetic: Gaussian with eigenvalues decaying geometrically by 10^4 across the d directions, so
that GRIP's default relative threshold (1e-3) keeps ~3/4 of an expert's directions, as the upper
end of the OLMoE probe (62-189 of 256; docs/methods.md section 7). The routing is the top-8 of a
random router on those inputs. GRIP's own code builds the bases (`nullspace.accumulate_gram`,
`nullspace.span_bases` with GripConfig's settings and eigh chunk) for `sampled_experts` of the E
experts (the experts are exchangeable here); GRIP stores one [E, d, r_max] basis per protected
layer (float32, or bfloat16 with `basis_dtype`), so a layer costs E * d * r_max * bytes, and the
model that times the number of protected layers. Also timed: the float32 vs float64 eigh.
"""

from __future__ import annotations

import math
import time

import torch

from bench.common import Env, Figure, sig
from moe_unlearn.adapters import nullspace
from moe_unlearn.adapters.grip import GripConfig

GIB = 2**30
BOUNDED_LIMIT_GIB = 2.0


def synthetic_inputs(tokens: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """[T, d] float32 inputs whose covariance has eigenvalues 10^(-4 i / d), random directions."""
    scale = torch.pow(10.0, -2.0 * torch.arange(d, dtype=torch.float64) / d)  # sqrt of the eigenvalues
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    z = torch.randn(tokens, d, dtype=torch.float64, generator=generator)
    return ((z * scale) @ q.T).float()


def layer_gram(x: torch.Tensor, selected: torch.Tensor, experts: list[int]) -> torch.Tensor:
    """GRIP's [len(experts), d, d] float64 Gram stack for the listed experts only."""
    gram = torch.zeros(len(experts), x.shape[1], x.shape[1], dtype=torch.float64)
    nullspace.accumulate_gram(gram, x, selected[:, experts])
    return gram


def timed_bases(gram: torch.Tensor, cfg: GripConfig, dtype: torch.dtype) -> tuple[nullspace.SpanBases, float]:
    t0 = time.perf_counter()
    bases = nullspace.span_bases(gram, rel_energy=cfg.rel_energy, max_rank=cfg.max_rank, dtype=dtype,
                          chunk=cfg.eigh_chunk, eigh_dtype=getattr(torch, cfg.eigh_dtype))
    return bases, time.perf_counter() - t0


def eigh_precision(gram: torch.Tensor) -> dict[str, object]:
    """float32 vs float64 eigh at the default threshold: time, ranks, largest projector difference."""
    b64, t64 = timed_bases(gram, GripConfig(), torch.float32)
    b32, t32 = timed_bases(gram, GripConfig(eigh_dtype="float32"), torch.float32)
    p64, p32 = (b.basis.double() @ b.basis.double().transpose(1, 2) for b in (b64, b32))
    return {"eigh_float64_s": round(t64, 2), "eigh_float32_s": round(t32, 2),
            "float32_same_ranks": bool(torch.equal(b64.rank, b32.rank)),
            "float32_projector_max_diff": float(f"{float((p64 - p32).abs().max()):.3g}")}


def run(env: Env) -> list[Figure]:
    g = env.settings.geometry
    d, num_experts, k, layers, tokens = g["d"], g["experts"], g["top_k"], g["layers"], g["tokens"]
    gen = torch.Generator().manual_seed(0)
    x = synthetic_inputs(tokens, d, gen)
    router = torch.randn(num_experts, d, generator=gen) / math.sqrt(d)
    selected = torch.zeros(tokens, num_experts, dtype=torch.bool).scatter_(1, (x @ router.T).topk(k, dim=1).indices, True)
    experts = list(range(g["sampled_experts"]))
    gram = layer_gram(x, selected, experts)
    chunk = GripConfig().eigh_chunk or num_experts
    prep = {"gram_GiB_per_pass": round(num_experts * d**2 * 8 / GIB, 2),  # one layer per pass at this size
            "eigh_workspace_GiB": round(2 * min(chunk, num_experts) * d**2 * 8 / GIB, 2),  # input + vectors
            "ptc_targets_GiB_all_layers": round(tokens * num_experts * 4 * layers / GIB, 2),
            "margin_cache_GiB_per_protected_layer": round(tokens * (d + num_experts) * 4 / GIB, 2),
            "router_input_cache_GiB": 0.0,  # streamed batch by batch since the bounded preparation
            **eigh_precision(gram)}
    figures = []
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        # largest rank that keeps the whole model's projectors under the bounded limit
        cap = min(d, int(BOUNDED_LIMIT_GIB * GIB // (num_experts * d * size * layers)))
        name = str(dtype).removeprefix("torch.")
        for label, cfg in ((f"default, {name}", GripConfig()),
                           (f"bounded (max_rank={cap}), {name}", GripConfig(max_rank=cap))):
            bases, seconds = timed_bases(gram, cfg, dtype)
            r_max = bases.basis.shape[2]
            padded = num_experts * d * r_max * size * layers / GIB
            ragged = float(bases.rank.double().mean()) * num_experts * d * size * layers / GIB
            detail = {"geometry": dict(g), "rel_energy": cfg.rel_energy, "max_rank": cfg.max_rank,
                      "basis_dtype": name, "rank_sampled": bases.rank.tolist(), "r_max": r_max,
                      "layer_MiB": round(padded * GIB / layers / 2**20, 1), "ragged_GiB": round(ragged, 3),
                      "protected_energy_share": round(float(bases.energy.mean()), 4),
                      "tokens_per_expert": selected[:, experts].sum(0).tolist(),
                      "bases_seconds_sampled": round(seconds, 2)}
            if not figures:
                detail["preparation"] = prep
            bounded = cfg.max_rank is not None
            figures.append(Figure(f"GRIP projector memory, Qwen3-30B-A3B geometry, {label}", sig(padded),
                                  BOUNDED_LIMIT_GIB if bounded else None, op="<=" if bounded else "report",
                                  unit="GiB", detail=detail))
    return figures
