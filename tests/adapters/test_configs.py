"""Every shipped adapter YAML loads and validates; bad adapter settings are one-line UserErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from moe_unlearn.adapters.grip import GripConfig
from moe_unlearn.adapters.keep_routing import KeepRoutingConfig
from moe_unlearn.errors import UserError
from moe_unlearn.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "adapters").glob("*.yaml"))


def test_the_adapter_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"grip", "seuf", "trace", "trace_grip", "seuf_trace", "shortcut_probe",
                                        "keep_routing", "grip_keep_routing"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_adapter_config_validates(path):
    cfg = load_config(path)
    for name in cfg.adapters:
        assert type(cfg.section(name)).__name__.lower().startswith(name.replace("_", ""))
    if path.stem == "grip":
        assert cfg.section("grip") == GripConfig()  # the YAML documents the defaults
    if path.stem == "keep_routing":
        assert cfg.section("keep_routing") == KeepRoutingConfig()
    if path.stem == "shortcut_probe":
        assert cfg.train.params == ["routers"] and cfg.adapters == []


@pytest.mark.parametrize("override, message", [
    ("grip.rel_energy=2", "'grip.rel_energy' must be in [0, 1)"),
    ("grip.mode=projection", "'grip.mode' must be one of"),
    ("seuf.top_m=0", "'seuf.top_m' must be >= 1"),
    ("trace.w_max=0.5", "'trace.w_max' must be >= 1"),
    ("trace.combine=sum", "'trace.combine' must be one of"),
])
def test_bad_adapter_settings_are_user_errors(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(CONFIGS[0].parent / "trace_grip.yaml", [override])


@pytest.mark.parametrize("overrides, message", [
    (["method=ga", "adapters=[trace]"], "adapter 'trace' reweights the retain loss, but method 'ga' has no retain term"),
    (["adapters=[trace]", "graddiff.alpha=0"], "method 'graddiff' has no retain term"),
    (["adapters=[grip]", "train.lora={r: 4, target_parameters: [mlp.experts.gate_up_proj]}"],
     "adapter 'grip' cannot work on LoRA deltas; drop train.lora"),
    (["adapters=[seuf]", "train.lora={r: 4, target_parameters: [mlp.experts.gate_up_proj]}"],
     "adapter 'seuf' cannot work on LoRA deltas"),
    (["adapters=[seuf,grip]"], "'seuf' trains only what it selects and leaves the rest unchanged, but grip mode "
                               "'project\\+ptc' refits every router after training; set grip.ptc_routers=trainable"),
    (["adapters=[grip,seuf]", "grip.mode=online"], "'seuf' trains only what it selects"),
])
def test_combinations_the_declarations_rule_out_are_user_errors(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(CONFIGS[0].parent / "grip.yaml", ["method=graddiff", *overrides])


@pytest.mark.parametrize("overrides", [
    ["adapters=[seuf,grip]", "grip.mode=project"],
    ["adapters=[seuf,grip]", "grip.ptc_routers=trainable"],
    ["method=ga", "adapters=[grip]", "grip.consistency=1"],  # needs a retain forward: the engine runs one
    ["adapters=[trace,grip]"],
])
def test_combinations_the_declarations_allow_validate(overrides):
    cfg = load_config(CONFIGS[0].parent / "grip.yaml", ["method=graddiff", *overrides])
    listed = next(o for o in overrides if o.startswith("adapters="))
    assert cfg.adapters == listed.split("=")[1].strip("[]").split(",")
