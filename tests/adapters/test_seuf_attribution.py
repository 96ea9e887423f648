"""SEUF's two attributions on tiny models with routers set by hand (no training, so no property of a
trained model: every assertion follows from the construction or from SEUF's own definitions)."""

from __future__ import annotations

import json

import pytest
import torch

from moe_unlearn.adapters.routing_io import capture
from moe_unlearn.adapters.seuf import Seuf, SeufConfig, expert_affinity
from moe_unlearn.models.routing import capture_routing
from moe_unlearn.models.tiny import tiny_model
from tests.adapters.conftest import random_batches

LAYER, BROAD, SPECIFIC = 1, 2, 6


def _mean_input(model, batches, layer):
    with capture_routing(model, router_inputs=True) as cap:
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    return cap.layers[layer].inputs.mean(0)


def _model_with_a_broad_and_a_specific_expert():
    """Expert BROAD of MoE layer LAYER takes most tokens of both splits; expert SPECIFIC takes forget
    tokens more than retain tokens, but fewer of them than BROAD does."""
    forget, retain = random_batches(4, seed=3, low=128), random_batches(6, seed=4, high=128)
    model = tiny_model("olmoe", seed=1)
    router = model.model.layers[LAYER].mlp.gate.weight
    mf, mr = _mean_input(model, forget, LAYER), _mean_input(model, retain, LAYER)
    both, only_forget = (mf + mr) / 2, mf - mr
    with torch.no_grad():
        router[BROAD] += 8 * both / both.norm()
        router[SPECIFIC] += 2 * only_forget / only_forget.norm()
    return model, forget, retain


def test_paper_and_contrastive_attribution_choose_by_their_own_scores(fake_ctx):
    model, forget, retain = _model_with_a_broad_and_a_specific_expert()
    ctx = fake_ctx(model, forget=forget, retain=retain)
    aff_f, aff_r = expert_affinity(capture(model, forget)), expert_affinity(capture(model, retain))
    paper = Seuf(SeufConfig(attribution="forget"))
    paper.prepare(ctx)
    contrastive = Seuf(SeufConfig(attribution="contrastive"))
    contrastive.prepare(ctx)

    def best(scores):
        flat = [(float(v), layer, e) for layer, s in enumerate(scores) for e, v in enumerate(s.tolist())]
        return max(flat, key=lambda x: (x[0], -x[1], -x[2]))[1:]

    assert paper.targets == [best(aff_f)]
    assert contrastive.targets == [best([f - r for f, r in zip(aff_f, aff_r)])]
    # the construction: the broad expert wins on forget affinity alone, the forget-specific one on the difference
    assert paper.targets == [(LAYER, BROAD)] and contrastive.targets == [(LAYER, SPECIFIC)]
    record = json.loads((ctx.out_dir / "seuf_attribution.json").read_text())
    assert record["attribution"] == "contrastive" and record["targets"] == [{"layer": LAYER, "expert": SPECIFIC}]
    assert record["score"][LAYER][SPECIFIC] == pytest.approx(record["affinity"][LAYER][SPECIFIC]
                                                             - record["retain_affinity"][LAYER][SPECIFIC])
    info = contrastive.summary()
    assert info["attribution"] == "contrastive"
    assert info["targets"][0]["retain_affinity"] == pytest.approx(float(aff_r[LAYER][SPECIFIC]), abs=1e-6)


def test_contrastive_attribution_needs_retain_records(fake_ctx):
    from moe_unlearn.errors import UserError

    forget = random_batches(2, seed=3)
    ctx = fake_ctx(tiny_model("olmoe", seed=1), forget=forget, retain=[])
    with pytest.raises(UserError, match="'seuf.attribution: contrastive' needs retain records"):
        Seuf(SeufConfig(attribution="contrastive")).prepare(ctx)


def test_bad_attribution_is_a_user_error():
    from moe_unlearn.errors import UserError
    from moe_unlearn.train.config import load_config

    from tests.adapters.test_configs import CONFIGS

    with pytest.raises(UserError, match="'seuf.attribution' must be one of"):
        load_config(CONFIGS[0].parent / "seuf.yaml", ["seuf.attribution=retain"])


def test_seuf_changes_only_its_slice_and_router_whatever_it_picks(adapter_run, tiny_benchmark, tmp_path):
    """What SEUF guarantees, for either attribution: the saved model differs from the original only
    in the chosen expert's slice and its layer's router, and the choice is the best score it wrote."""
    from safetensors.torch import load_file

    before = load_file(str(tiny_benchmark.parent / "model" / "model.safetensors"))
    for attribution in ("forget", "contrastive"):
        metrics = adapter_run(attribution, "adapters=[seuf]", f"seuf.attribution={attribution}", "train.lr=1e-2",
                              "train.max_steps=2")
        record = json.loads((tmp_path / attribution / "seuf_attribution.json").read_text())
        scores = record.get("score", record["affinity"])
        (target,) = record["targets"]
        layer, expert = target["layer"], target["expert"]
        assert scores[layer][expert] == pytest.approx(max(max(s) for s in scores))
        after = load_file(str(tmp_path / attribution / "model" / "model.safetensors"))
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        prefix = f"model.layers.{layer}.mlp"
        assert changed and changed <= {f"{prefix}.gate.weight"} | {k for k in before if k.startswith(f"{prefix}.experts.{expert}.")}
        assert metrics["memory"]["trainable_params"] == metrics["adapter_info"]["seuf"]["trained_params"]
