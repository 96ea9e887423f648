"""GRIP projector memory at Qwen3-30B-A3B router geometry, extrapolated from one real-sized layer.

One layer: d = 2048, E = 128 experts, top-8, 32k retained tokens. The router inputs are
synthetic: Gaussian with eigenvalues decaying geometrically by 10^4 across the d directions, so
that GRIP's default relative threshold (1e-3) keeps ~3/4 of an expert's directions, as the upper
end of the OLMoE probe (62-189 of 256; docs/methods.md section 7). The routing is the top-8 of a
random router on those inputs. GRIP's own code builds the bases (`nullspace.accumulate_gram`,
`nullspace.span_bases` with GripConfig's settings) for `sampled_experts` of the E experts (the
experts are exchangeable here; a full E x d x d float64 Gram stack alone would be 4 GiB); GRIP
stores one [E, d, r_max] float32 basis per layer, so a layer costs E * d * r_max * 4 bytes, and
the model that times the number of MoE layers.
"""

from __future__ import annotations

import math

import torch

from bench.common import Env, Figure, sig
from moe_unlearn.adapters import nullspace as ns
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
    ns.accumulate_gram(gram, x, selected[:, experts])
    return gram


def unprotected_share(x: torch.Tensor, selected: torch.Tensor, experts: list[int], bases: ns.SpanBases) -> float:
    """Mean over the experts of the share of their selected tokens' energy outside the kept span."""
    shares = []
    for i, e in enumerate(experts):
        xs = x[selected[:, e]]
        inside = (xs @ bases.basis[i]).pow(2).sum()
        shares.append(float(1 - inside / xs.pow(2).sum()))
    return sum(shares) / len(shares)


def run(env: Env) -> list[Figure]:
    g = env.settings.geometry
    d, num_experts, k, layers, tokens = g["d"], g["experts"], g["top_k"], g["layers"], g["tokens"]
    gen = torch.Generator().manual_seed(0)
    x = synthetic_inputs(tokens, d, gen)
    router = torch.randn(num_experts, d, generator=gen) / math.sqrt(d)
    selected = torch.zeros(tokens, num_experts, dtype=torch.bool).scatter_(1, (x @ router.T).topk(k, dim=1).indices, True)
    experts = list(range(g["sampled_experts"]))
    # largest rank that keeps the whole model's projectors under the bounded limit
    cap = min(d, int(BOUNDED_LIMIT_GIB * GIB // (num_experts * d * 4 * layers)))
    gram = layer_gram(x, selected, experts)
    figures = []
    for label, cfg in (("default", GripConfig()), (f"bounded (max_rank={cap})", GripConfig(max_rank=cap))):
        bases = ns.span_bases(gram, rel_energy=cfg.rel_energy, max_rank=cfg.max_rank, dtype=torch.float32)
        r_max = bases.basis.shape[2]
        padded = num_experts * d * r_max * 4 * layers / GIB
        ragged = float(bases.rank.double().mean()) * num_experts * d * 4 * layers / GIB
        detail = {"geometry": dict(g), "rel_energy": cfg.rel_energy, "max_rank": cfg.max_rank,
                  "rank_sampled": bases.rank.tolist(), "r_max": r_max,
                  "layer_MiB": round(padded * GIB / layers / 2**20, 1),
                  "ragged_GiB": round(ragged, 3),
                  "unprotected_energy_share": round(unprotected_share(x, selected, experts, bases), 4),
                  "tokens_per_expert": selected[:, experts].sum(0).tolist(),
                  "prepare_gram_GiB_per_layer": round(num_experts * d**2 * 8 / GIB, 2),
                  "router_input_cache_GiB_all_layers": round(tokens * d * 4 * layers / GIB, 2)}
        bounded = cfg.max_rank is not None
        figures.append(Figure(f"GRIP projector memory, Qwen3-30B-A3B geometry, {label}", sig(padded),
                              BOUNDED_LIMIT_GIB if bounded else None, op="<=" if bounded else "report",
                              unit="GiB", detail=detail))
    return figures
