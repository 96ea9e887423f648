r"""RMU (WMDP paper): steer forget activations at one layer to a fixed random direction.

forget: MSE(h_theta(x_f), c * u) with u a fixed random unit vector;
retain: alpha * MSE(h_theta(x_r), h_ref(x_r)), h_ref from ctx.reference() (the ORIGINAL values
of the trained parameters swapped in, so memory is one copy of the trained parameters).
h is the output of decoder layer `layer`, read with a forward hook on that layer
(`models.decoder_layer_output`; `output_hidden_states` would give the FINAL-NORMED state for
the last layer), averaged over non-padding tokens. Only a few layers train: by default the
decoder layers layer-2..layer.

MoE models need a far larger steering coefficient than dense ones: WMDP used c = 6.5 on
Zephyr-7B and c = 300 on Mixtral-8x7B (run_rmu_zephyr.ipynb, run_rmu_mixtral.ipynb), the SEUF
paper 3000-32000 on Qwen1.5-MoE / DeepSeek-V2-Lite. What matters is c
relative to the norm of the layer's activations; `prepare` logs that norm (`rmu_act_norm`).
The defaults (c = 20, alpha = 100) suit the embedded benchmark model (activation norm ~6.6 at
layer 2); for a real MoE model set c to several times its logged norm.

Which tensors train (`params`, selector specs as in train.params). WMDP's code
(centerforaisafety/wmdp rmu/utils.py get_params) picks parameter number `param_ids` of each
decoder layer in `layer_ids` (5, 6, 7); on its dense models number 6 is `mlp.down_proj.weight`.
The WMDP recipes (configs/benchmarks/_wmdp_rmu.yaml) map that to every routed expert's
down-projection plus a shared expert's, with
`regex:\.layers\.[5-7]\..*down_proj(\.weight)?$` (biases such as GPT-OSS's `down_proj_bias`
excluded), per family:
  OLMoE, Qwen3-MoE, Mixtral, PhiMoE, GPT-OSS   mlp.experts.down_proj (fused [E, ...])
  GraniteMoE                                  block_sparse_moe.experts.down_proj
  Qwen2-MoE (Qwen1.5-MoE)                     mlp.experts.down_proj + mlp.shared_expert.down_proj.weight
  DeepSeek-V2 / V3                            mlp.experts.down_proj + mlp.shared_experts.down_proj.weight
  Llama 4                                     feed_forward.experts.down_proj + feed_forward.shared_expert.down_proj.weight
(tests/methods/test_rmu_moe_params.py checks this for every tiny architecture). WMDP's own
Mixtral run passed param_ids 7, which in transformers 4.x's unfused Mixtral is experts.0.w3,
one expert's up-projection: fused expert tensors cannot express that (docs/recipes.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_unlearn.config import require
from moe_unlearn.errors import UserError
from moe_unlearn.core import losses
from moe_unlearn.core.dist import all_reduce_sum
from moe_unlearn.core.needs import Needs
from moe_unlearn.methods.base import METHODS, Batch, Method, MethodOutput
from moe_unlearn.models import decoder_layer_output
from moe_unlearn.models.selectors import check_specs


@dataclass
class RMUConfig:
    layer: int = 2
    steering_coef: float = 20.0  # ~3x the layer-2 activation norm of the embedded benchmark model
    alpha: float = 100.0
    # selector specs of the trained parameters; None: decoder layers max(0, layer-2)..layer
    # (unless train.params was changed from ["all"])
    params: list[str] | None = None

    def validate(self, where: str) -> None:
        require(self.layer >= 0, f"'{where}.layer' must be >= 0, got {self.layer}")
        require(self.steering_coef > 0, f"'{where}.steering_coef' must be > 0, got {self.steering_coef}")
        require(self.alpha >= 0, f"'{where}.alpha' must be >= 0, got {self.alpha}")
        if self.params is not None:
            require(len(self.params) > 0, f"'{where}.params' is an empty list: list selector specs, or null for "
                                          f"decoder layers layer-2..layer")
            check_specs(self.params, f"{where}.params")


def token_mse(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, S, d] activations and a broadcastable target -> [B, S] mean squared error."""
    return (h.float() - target.float()).pow(2).mean(dim=-1)


@METHODS.register("rmu")
class RMU(Method):
    name = "rmu"
    config_cls = RMUConfig

    @classmethod
    def needs(cls, cfg: RMUConfig) -> Needs:
        # the retain term matches the original model's activations: ctx.reference() every step
        return Needs(retain_term=cfg.alpha > 0, reference=cfg.alpha > 0)

    def select_params(self, ctx, specs: list[str]) -> list[str] | None:
        if self.cfg.params is not None:
            return self.cfg.params
        if specs != ["all"]:
            return None
        return [f"layers:{max(0, self.cfg.layer - 2)}-{self.cfg.layer}"]

    @torch.no_grad()
    def prepare(self, ctx) -> None:
        n_layers = ctx.model.config.get_text_config().num_hidden_layers
        if self.cfg.layer >= n_layers:
            raise UserError(f"'rmu.layer' is {self.cfg.layer} but the model has {n_layers} decoder layers (0..{n_layers - 1})")
        d = ctx.model.config.get_text_config().hidden_size
        gen = torch.Generator().manual_seed(ctx.settings.seed)
        u = torch.rand(d, generator=gen)
        self.control = (self.cfg.steering_coef * u / u.norm()).to(ctx.device)
        total = torch.zeros(2, dtype=torch.float64, device=ctx.device)  # (sum of token norms, tokens)
        for batch in ctx.iter_split("forget"):
            h = self._hidden(ctx, batch, role="reference")[0][batch["attention_mask"].bool()].float()
            total += torch.stack([h.norm(dim=-1).sum().double(), torch.tensor(float(h.shape[0]), device=ctx.device)])
        norm_sum, tokens = all_reduce_sum(total).tolist()
        self.act_norm = norm_sum / max(tokens, 1.0)

    def _hidden(self, ctx, batch: Batch, *, role: str) -> tuple[torch.Tensor, object]:
        """(output of decoder layer `layer` [B, S, d], the ForwardOut of that forward). Nothing past
        that layer enters the loss: the forward may end there (`until`)."""
        with decoder_layer_output(ctx.model, self.cfg.layer) as seen:
            out = ctx.forward(batch, role=role, until=self.cfg.layer)
        return seen.value, out

    def loss(self, ctx, forget: Batch, retain: Batch) -> MethodOutput:
        mask_f = forget["attention_mask"].bool()
        lf = losses.weighted_token_mean(token_mse(self._hidden(ctx, forget, role="forget")[0], self.control), mask_f)
        logs = {"forget_loss": float(lf.detach()), "rmu_act_norm": self.act_norm}
        if not self.needs(self.cfg).retain_term:
            return MethodOutput(lf, logs)
        with torch.no_grad(), ctx.reference():
            h_ref = self._hidden(ctx, retain, role="reference")[0]
        h, out = self._hidden(ctx, retain, role="retain")
        mse = token_mse(h, h_ref)
        l_retain = losses.weighted_token_mean(mse, retain["attention_mask"].bool(), out.token_weights)
        logs["retain_loss"] = float(l_retain.detach())
        return MethodOutput(lf + self.cfg.alpha * l_retain, logs)
