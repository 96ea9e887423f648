"""UnlearnConfig: base inheritance, per-method sections, clear errors, every shipped YAML."""

from pathlib import Path

import pytest
import yaml

from moe_unlearn.errors import UserError
from moe_unlearn.methods.npo import NPOConfig
from moe_unlearn.train import build_config, load_config

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").rglob("*.yaml"))
# adapters/, benchmarks/ and accelerate/ have their own tests (tests/adapters/test_configs.py,
# tests/train/test_benchmark_configs.py, tests/distributed/test_accelerate_configs.py)
SHIPPED = [p for p in SHIPPED if not {"adapters", "benchmarks", "accelerate"} & set(p.relative_to(REPO / "configs").parts)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads_and_starts_with_its_command(path):
    from moe_unlearn.methods import METHODS

    cfg = load_config(path)
    assert cfg.method in cfg.settings
    first = path.read_text().splitlines()[0]
    command = "finetune" if METHODS.get(cfg.method).learns else "unlearn"
    assert first.startswith(f"# moe-unlearn {command} ") and str(path.relative_to(REPO)) in first
    if path.parent.name == "methods":
        assert cfg.method == path.stem


def test_every_method_ships_a_config():
    from moe_unlearn.methods import METHODS

    assert {p.stem for p in SHIPPED if p.parent.name == "methods"} == set(METHODS.names())


def test_base_inheritance_sections_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"method": "ga", "train": {"lr": 1e-3, "max_steps": 7},
                                                        "data": {"manifest": "auto"}}))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "method": "npo",
                                                       "train": {"max_steps": 9}, "npo": {"beta": 0.5}}))
    cfg = load_config(tmp_path / "run.yaml", ["npo.alpha=0", "train.schedule=cosine"])
    assert cfg.method == "npo" and cfg.train.lr == 1e-3 and cfg.train.max_steps == 9
    npo = cfg.section("npo")
    assert isinstance(npo, NPOConfig) and npo.beta == 0.5 and npo.alpha == 0
    resolved = cfg.to_dict()
    assert resolved["npo"]["beta"] == 0.5 and resolved["train"]["schedule"] == "cosine"
    assert build_config(resolved).to_dict() == resolved  # config.yaml round-trips


@pytest.mark.parametrize("raw, message", [
    ({"method": "npo", "trian": {}}, r"unknown config key 'trian' \(did you mean 'train'\?\)"),
    ({"method": "npo", "npoo": {}}, r"unknown config key 'npoo' \(did you mean 'npo'\?\)"),
    ({"method": "npo", "npo": {"betta": 1}}, r"unknown config key 'npo.betta' \(did you mean 'beta'\?\)"),
    ({"method": "nop"}, r"unknown method 'nop' \(did you mean 'npo'\?\)"),
    ({"method": "npo", "train": {"lr": -1}}, r"'train.lr' must be > 0"),
    ({"method": "npo", "npo": {"beta": 0}}, r"'npo.beta' must be > 0"),
    ({"method": "npo", "train": {"load_balancing_coef": -0.1}}, r"'train.load_balancing_coef' must be >= 0"),
    ({"method": "npo", "train": {"early_stop": {"forget_mc_acc_at_most": 1.5}, "eval_every": 5}}, r"must be in \[0, 1\]"),
    ({"method": "npo", "train": {"early_stop": {"forget_nll_at_least": 5}}}, r"needs 'train.eval_every' > 0"),
    ({"method": "npo", "train": {"max_steps": None}}, r"set 'train.max_steps' or 'train.epochs'"),
    ({"method": "npo", "adapters": ["nosuch"]}, r"unknown adapter 'nosuch'"),
    ({"train": {}}, r"missing required config key 'method'"),
])
def test_mistakes_are_user_errors(raw, message):
    raw.setdefault("data", {"manifest": "auto"})
    with pytest.raises(UserError, match=message):
        build_config(raw)


def test_base_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nmethod: ga\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(tmp_path / "a.yaml")
