"""docs/design.md's "add an adapter" walkthrough, followed literally: one new file in adapters/
plus one config, and the engine runs it with nothing else changed."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

import moe_unlearn.adapters as adapters_pkg
from moe_unlearn.adapters import ADAPTERS
from moe_unlearn.errors import UserError
from moe_unlearn.train import load_config, run_unlearning

# The file a contributor writes: src/moe_unlearn/adapters/router_l2.py (here in a temporary folder).
NEW_ADAPTER = '''
"""Router logit L2 (an illustration): keep forget tokens' router logits small."""

from dataclasses import dataclass

from moe_unlearn.adapters.base import ADAPTERS, Adapter
from moe_unlearn.config import require
from moe_unlearn.core.needs import Needs


@dataclass
class RouterL2Config:
    weight: float = 0.1

    def validate(self, where: str) -> None:
        require(self.weight >= 0, f"'{where}.weight' must be >= 0, got {self.weight}")


@ADAPTERS.register("router_l2")
class RouterL2(Adapter):
    name = "router_l2"
    config_cls = RouterL2Config

    @classmethod
    def needs(cls, cfg):
        return Needs(capture=frozenset({"forget"}))

    def loss_terms(self, ctx, forwards):
        routing = forwards["forget"].routing
        l2 = sum(layer.logits.float().pow(2).mean() for layer in routing.layers) / len(routing.layers)
        return {"l2": self.cfg.weight * l2}

    def summary(self):
        return {"weight": self.cfg.weight}
'''


@pytest.fixture
def new_adapter_file(tmp_path, monkeypatch):
    """Drop the new file into a folder of the adapters package, as if it were in src/."""
    folder = tmp_path / "adapters_ext"
    folder.mkdir()
    (folder / "router_l2.py").write_text(NEW_ADAPTER)
    monkeypatch.setattr(adapters_pkg, "__path__", [*adapters_pkg.__path__, str(folder)])
    ADAPTERS.names()  # the shipped adapters are discovered first
    monkeypatch.setattr(ADAPTERS, "_entries", dict(ADAPTERS._entries))
    monkeypatch.setattr(ADAPTERS, "_discovered", False)
    yield folder
    sys.modules.pop("moe_unlearn.adapters.router_l2", None)


def test_a_new_adapter_is_one_file_plus_a_config(new_adapter_file, tiny_benchmark, tmp_path):
    config = tmp_path / "router_l2.yaml"  # the config a contributor ships in configs/adapters/
    config.write_text(yaml.safe_dump({
        "method": "graddiff", "adapters": ["router_l2"], "router_l2": {"weight": 0.5},
        "data": {"manifest": str(tiny_benchmark), "batch_size": 4, "retain_batch_size": 4},
        "train": {"lr": 1e-3, "max_steps": 2, "checkpoint_every": 0},
        "eval": {"metrics": ["nll"], "max_examples": 8},
    }))
    cfg = load_config(config)
    assert "router_l2" in ADAPTERS.names() and cfg.section("router_l2").weight == 0.5
    metrics = run_unlearning(cfg, out_dir=tmp_path / "run", progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert metrics["adapter_info"] == {"router_l2": {"weight": 0.5}}
    assert all(rec["router_l2/l2"] > 0 for rec in log)
    assert all(rec["loss"] == pytest.approx(rec["forget_loss"] + rec["retain_loss"] + rec["router_l2/l2"], rel=1e-5)
               for rec in log)
    with pytest.raises(UserError, match="'router_l2.weight' must be >= 0"):
        load_config(config, ["router_l2.weight=-1"])
