"""The WMDP RMU recipes train exactly the MoE counterpart of WMDP's dense RMU tensors.

WMDP's RMU trains the MLP down-projection of decoder layers 5-7 (centerforaisafety/wmdp
rmu/unlearn.py --layer_ids 5,6,7, param_ids 6 = mlp.down_proj on its dense models). On an MoE
model the recipes map that to every routed expert's down-projection and, where the family has
one, the shared expert's down-projection, of the same layers, and nothing else (no router, no
attention, no up/gate projection, no bias).
"""

from __future__ import annotations

import re

import pytest
from benchmark_recipes import RECIPES_DIR, without_pending

from moe_unlearn.errors import UserError
from moe_unlearn.methods import METHODS
from moe_unlearn.methods.rmu import RMUConfig
from moe_unlearn.config import build, resolve_yaml
from moe_unlearn.models import moe_layers, select_parameters, tiny_model
from moe_unlearn.models.tiny import TINY_ARCHS
from moe_unlearn.train.config import build_config

RMU_RECIPES = ["wmdp_bio_rmu", "wmdp_cyber_rmu"]
TRAINED_LAYERS = {5, 6, 7}  # rmu/unlearn.py --layer_ids 5,6,7


def recipe_specs(name: str) -> tuple[list[str], int]:
    """(the selector specs the recipe's RMU trains, its steering layer), as the engine resolves them."""
    cfg = build_config(without_pending(resolve_yaml(RECIPES_DIR / f"{name}.yaml"))[0])
    assert cfg.method == "rmu" and cfg.adapters == []
    method = METHODS.get("rmu")(cfg.section("rmu"))
    specs = method.select_params(None, cfg.train.params) or cfg.train.params
    return specs, cfg.section("rmu").layer


def down_projections(model) -> set[str]:
    """Found from the module structure, not from names: per MoE layer in TRAINED_LAYERS, the fused
    experts' down-projection weight and each shared expert's down-projection weight."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = set()
    for layer in moe_layers(model):
        index = int(re.search(r"\.layers\.(\d+)\.", layer.name + ".").group(1))
        if index not in TRAINED_LAYERS:
            continue
        out.add(names[id(layer.experts.down_proj)])
        for child_name, child in layer.block.named_children():
            if child_name.startswith("shared_"):
                down = getattr(child, "down_proj", None)
                if down is not None:
                    out.add(names[id(down.weight)])
    return out


@pytest.mark.parametrize("recipe", RMU_RECIPES)
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_rmu_recipe_trains_the_expert_down_projections_of_layers_5_to_7(recipe, arch):
    specs, layer = recipe_specs(recipe)
    assert layer == 7  # rmu/unlearn.py --layer_id 7: the steered layer is the last trained one
    model = tiny_model(arch, layers=8)  # every decoder layer of the tiny models is an MoE layer
    refs = select_parameters(model, specs)
    got = {r.name for r in refs}
    expected = down_projections(model)
    assert got == expected, f"{arch}: unexpected {sorted(got - expected)}, missing {sorted(expected - got)}"
    assert all(r.expert is None for r in refs)  # whole tensors: every expert trains, not one slice
    has_shared = any(layer.shared_experts is not None for layer in moe_layers(model))
    assert len(got) == len(TRAINED_LAYERS) * (2 if has_shared else 1)
    layout = moe_layers(model)[0]
    assert not any(n.startswith(layout.router_name) for n in got)  # the router never trains


def test_rmu_recipe_selects_nothing_on_a_model_too_shallow_for_layer_7():
    """A model with fewer than 8 decoder layers has no layer 5-7: the regex selects nothing (the
    engine then refuses the run), so test a smaller model with rmu.layer / rmu.params overrides."""
    specs, _ = recipe_specs("wmdp_cyber_rmu")
    assert select_parameters(tiny_model("olmoe", layers=4), specs) == []


def test_rmu_params_are_checked_at_config_load():
    with pytest.raises(UserError, match=r"'rmu.params': unknown parameter spec 'down_proj'"):
        build(RMUConfig, {"params": ["down_proj"]}, "rmu")
    with pytest.raises(UserError, match=r"'rmu.params' is an empty list"):
        build(RMUConfig, {"params": []}, "rmu")
    assert build(RMUConfig, {"params": ["layers:5-7"]}, "rmu").params == ["layers:5-7"]
