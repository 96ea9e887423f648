"""GRIP projector memory at Qwen3-30B-A3B router geometry, extrapolated from one real-sized layer.

One layer: d = 2048, E = 128 experts, top-8, 32k retained tokens. The router inputs are
synthetic: Gaussian with eigenvalues decaying geometrically by 10^4 across the d directions, so
that GRIP's default relative threshold (1e-3) keeps ~3/4 of an expert's directions, as the upper
end of the OLMoE probe (62-189 of 256; docs/methods.md section 7). The routing is the top-8 of a
random router on those inputs. GRIP's own code decomposes the Grams (`nullspace.accumulate_gram`
and the eigen-selection `span_bases` uses) of `sampled_experts` of the E experts (exchangeable
here) ONCE in float64; every mode's rank cap and dtype is read off those eigenpairs.

Modes, each times the number of protected layers (48):
- per-expert (the paper, default): [E, d, r_max] per layer, float32 or bfloat16;
- per-expert, offloaded: the same bases in host memory, one layer on the accelerator at a time
  (its cost is host-to-device traffic: every layer's bases once per step);
- shared span: one [d, r] basis per layer of ALL retained inputs; protected energy = the share of
  each sampled expert's retained energy inside it (what the per-expert figure reports);
- bounded: per-expert with the largest `max_rank` that fits 2 GiB.
Also: the float32 vs float64 eigh, the projection time per layer (this CPU), and preparation's
working memory (E x d^2 float64 Gram stack vs the layer's inputs, `grip.prep_gram`).
"""

from __future__ import annotations

import math
import time

import torch

from bench.common import Env, Figure, sig
from moe_unlearn.adapters import nullspace
from moe_unlearn.adapters.grip import GripConfig

GIB = 2**30
LIMIT_GIB = 2.0
ENERGY_TARGET = 0.99
PCIE_GBPS = 25.0  # PCIe 4.0 x16, about what a host-to-GPU copy sustains (estimate, not measured here)


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


def eigenpairs(gram: torch.Tensor, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(eigenvalues [C, d], eigenvectors [C, d, d]) in descending order, and the seconds taken."""
    t0 = time.perf_counter()
    evals, evecs = torch.linalg.eigh(gram.to(dtype))
    return evals.flip(-1).double(), evecs.flip(-1).double(), time.perf_counter() - t0


def select(evals: torch.Tensor, evecs: torch.Tensor, cfg: GripConfig, dtype: torch.dtype) -> nullspace.SpanBases:
    basis, rank, energy, complement = nullspace.select_span(evals, evecs, cfg.rel_energy, cfg.max_rank, dtype)
    return nullspace.SpanBases(basis=basis, rank=rank, energy=energy, complement=complement)


def inside_share(shared: nullspace.SpanBases, gram: torch.Tensor) -> torch.Tensor:
    """[C] share of each Gram's trace inside a shared span: tr(U^T G U) / tr(G) (1 minus the
    complement's share where the basis stores the complement)."""
    u = shared.basis[0].double()
    share = torch.einsum("dr,cdf,fr->c", u, gram, u) / gram.diagonal(dim1=1, dim2=2).sum(1)
    return 1 - share if bool(shared.complement[0]) else share


def project_ms(experts: int, d: int, r: int, dtype: torch.dtype, shared: bool) -> float:
    """Milliseconds of one layer's projection (nullspace.project_rows) on this machine."""
    basis = torch.randn(1 if shared else experts, d, r).to(dtype)
    delta = torch.randn(experts, d)
    nullspace.project_rows(delta, basis)
    t0 = time.perf_counter()
    nullspace.project_rows(delta, basis)
    return round(1000 * (time.perf_counter() - t0), 2)


def run(env: Env) -> list[Figure]:
    g = env.settings.geometry
    d, num_experts, k, layers, tokens = g["d"], g["experts"], g["top_k"], g["layers"], g["tokens"]
    gen = torch.Generator().manual_seed(0)
    x = synthetic_inputs(tokens, d, gen)
    router = torch.randn(num_experts, d, generator=gen) / math.sqrt(d)
    selected = torch.zeros(tokens, num_experts, dtype=torch.bool).scatter_(1, (x @ router.T).topk(k, dim=1).indices, True)
    experts = list(range(g["sampled_experts"]))
    gram = layer_gram(x, selected, experts)
    evals, evecs, eigh_s = eigenpairs(gram)
    shared_gram = torch.zeros(1, d, d, dtype=torch.float64)
    nullspace.accumulate_gram(shared_gram, x, torch.ones(tokens, 1, dtype=torch.bool))
    s_evals, s_evecs, _ = eigenpairs(shared_gram)
    f32_evals, f32_evecs, eigh32_s = eigenpairs(gram[:2], torch.float32)

    default = GripConfig()
    per_expert = {dt: select(evals, evecs, default, dt) for dt in (torch.float32, torch.bfloat16)}
    f32 = select(f32_evals, f32_evecs, default, torch.float32)
    p64, p32 = (b.basis.double() @ b.basis.double().transpose(1, 2) for b in (per_expert[torch.float32], f32))
    shared = select(s_evals, s_evecs, default, torch.float32)
    shared_share = inside_share(shared, gram)
    r_max = per_expert[torch.float32].basis.shape[2]
    r_shared = shared.basis.shape[2]
    cap = min(d, int(LIMIT_GIB * GIB // (num_experts * d * 4 * layers)))
    bounded = select(evals, evecs, GripConfig(max_rank=cap), torch.float32)

    def layer_bytes(r: int, size: int, rows: int = num_experts) -> float:
        return rows * d * r * size

    prep = {"gram_stack_GiB_per_layer": round(num_experts * d**2 * 8 / GIB, 2),
            "inputs_GiB_per_layer": round(tokens * (d * 4 + num_experts) / GIB, 3),  # grip.prep_gram=inputs
            "shared_gram_GiB_per_layer": round(d**2 * 8 / GIB, 3),
            "eigh_workspace_GiB": round(2 * min(default.eigh_chunk or num_experts, num_experts) * d**2 * 8 / GIB, 2),
            "ptc_targets_GiB_all_layers": round(tokens * num_experts * 4 * layers / GIB, 2),
            "router_input_cache_GiB": 0.0,
            "eigh_float64_s_per_expert": round(eigh_s / len(experts), 2),
            "eigh_float32_s_per_expert": round(eigh32_s / 2, 2),
            "float32_same_ranks": bool(torch.equal(per_expert[torch.float32].rank[:2], f32.rank)),
            "float32_projector_max_diff": float(f"{float((p64[:2] - p32).abs().max()):.3g}")}
    base = {"geometry": dict(g), "rel_energy": default.rel_energy, "tokens_per_expert": selected[:, experts].sum(0).tolist()}
    figures: list[Figure] = []

    def add(label: str, gib: float, energy: float, detail: dict, *, target: bool) -> None:
        name = f"GRIP projectors on the accelerator, Qwen3-30B-A3B geometry, {label}"
        figures.append(Figure(name, sig(gib), LIMIT_GIB if target else None, op="<=" if target else "report",
                              unit="GiB", detail={**base, **detail, "protected_energy_share": round(energy, 4)}))
        if target:
            figures.append(Figure(f"protected retained energy share, {label}", sig(energy), ENERGY_TARGET, op=">=",
                                  detail={"mode": label}))

    for dt, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        b = per_expert[dt]
        name = str(dt).removeprefix("torch.")
        detail = {"rank_sampled": b.rank.tolist(), "r_max": r_max, "layer_MiB": round(layer_bytes(r_max, size) / 2**20, 1),
                  "project_ms_per_layer_cpu": project_ms(num_experts, d, r_max, dt, shared=False)}
        if dt == torch.float32:
            detail["preparation"] = prep
        energy = float(b.energy.mean())
        add(f"per-expert (default), {name}", layer_bytes(r_max, size) * layers / GIB, energy, detail, target=False)
        traffic = layer_bytes(r_max, size) * layers
        add(f"per-expert, offloaded to host, {name}", layer_bytes(r_max, size) / GIB, energy,
            {**detail, "host_GiB": round(traffic / GIB, 2), "host_to_device_GiB_per_step": round(traffic / GIB, 2),
             "est_copy_s_per_step_at_25GBps": round(traffic / (PCIE_GBPS * 1e9), 2)}, target=True)
    add("shared span, float32", layer_bytes(r_shared, 4, rows=1) * layers / GIB, float(shared_share.mean()),
        {"rank": int(shared.rank[0]), "layer_MiB": round(layer_bytes(r_shared, 4, rows=1) / 2**20, 1),
         "share_of_all_retained_energy": round(float(shared.energy[0]), 4),
         "expert_share_min": round(float(shared_share.min()), 4),
         "project_ms_per_layer_cpu": project_ms(num_experts, d, r_shared, torch.float32, shared=True)}, target=True)
    add(f"per-expert bounded (max_rank={cap}), float32", layer_bytes(bounded.basis.shape[2], 4) * layers / GIB,
        float(bounded.energy.mean()), {"rank_sampled": bounded.rank.tolist(), "max_rank": cap}, target=True)
    return figures
