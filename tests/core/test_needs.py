"""The capability records (core/needs.py): each method and adapter's Needs follows its settings,
RunNeeds answers the run-wide questions, and RunSettings carries exactly the config's values."""

from __future__ import annotations

import pytest

from moe_unlearn.adapters import ADAPTERS
from moe_unlearn.adapters.grip import Grip, GripConfig
from moe_unlearn.adapters.keep_routing import KeepRouting, KeepRoutingConfig
from moe_unlearn.adapters.seuf import Seuf, SeufConfig
from moe_unlearn.adapters.trace import Trace, TraceConfig
from moe_unlearn.core.needs import Needs, RunNeeds
from moe_unlearn.core.settings import RunSettings
from moe_unlearn.methods import METHODS
from moe_unlearn.train.config import build_config, run_needs, run_settings


@pytest.mark.parametrize("method, settings, retain_term, reference", [
    ("ga", {}, False, False),
    ("graddiff", {}, True, False),
    ("graddiff", {"retain_loss": "kl"}, True, True),  # KL against the original model: ctx.reference()
    ("graddiff", {"alpha": 0, "retain_loss": "kl"}, False, False),  # no retain term, no reference
    ("rmu", {}, True, True),  # the retain term matches the original activations
    ("rmu", {"alpha": 0}, False, False),
])
def test_a_methods_record_follows_its_settings(method, settings, retain_term, reference):
    cls = METHODS.get(method)
    needs = cls.needs(cls.config_cls(**settings))
    assert (needs.retain_term, needs.reference) == (retain_term, reference)


def test_adapter_records():
    trace = Trace.needs(TraceConfig())
    assert trace.requires_retain_term and trace.capture == {"retain"} and not trace.capture_grad
    seuf = Seuf.needs(SeufConfig())
    assert seuf.selects_trainable and not seuf.lora and seuf.capture == frozenset()  # no anchor without train_router
    assert Seuf.needs(SeufConfig(train_router=True)).capture == {"forget"}
    assert Seuf.needs(SeufConfig(train_router=True, alpha=0)).capture == frozenset()
    grip = Grip.needs(GripConfig())
    assert not grip.lora and grip.edits_untrained and "grip.ptc_routers=trainable" in grip.edits_untrained
    assert Grip.needs(GripConfig(mode="project")).edits_untrained is None
    assert grip.conflicts == frozenset() and not grip.retain_forward and grip.capture == frozenset()


def test_grips_deprecated_alias_needs_what_keep_routing_needs():
    alias = GripConfig(mode="project", consistency=3)
    held = KeepRouting.needs(KeepRoutingConfig(loss="margin", weight=3, roles=["retain"], batch_size=None))
    grip = Grip.needs(alias)
    assert grip.retain_forward == held.retain_forward is True
    assert grip.capture == held.capture == {"retain"}
    assert grip.conflicts == {"keep_routing"} and not grip.reference and grip.extra_rows == 0
    assert isinstance(Grip(alias).consistency, ADAPTERS.get("keep_routing"))  # the alias runs keep_routing's code


def test_run_needs_combine_the_records():
    run = RunNeeds(Needs(retain_term=True), {
        "a": Needs(capture=frozenset({"forget"}), extra_rows=4),
        "b": Needs(capture=frozenset({"retain"}), capture_grad=False, extra_rows=2),
    })
    assert run.capture == {"forget", "retain"} and run.capture_grad == {"forget"}
    assert run.extra_rows == 6 and run.retain_rows and not run.retain_forward and not run.reference
    assert RunNeeds(Needs(), {"a": Needs(reference=True)}).reference
    assert RunNeeds(Needs(reference=True)).reference
    ga_with_forward = RunNeeds(Needs(), {"a": Needs(retain_forward=True)})
    assert ga_with_forward.retain_forward and ga_with_forward.retain_rows
    assert not RunNeeds(Needs()).retain_rows


def test_run_needs_of_a_configured_run():
    cfg = build_config({"method": "npo", "adapters": ["trace", "keep_routing"], "data": {"manifest": "auto"},
                        "keep_routing": {"original": "reference", "batch_size": 5}})
    method = METHODS.get(cfg.method)(cfg.section(cfg.method))
    adapters = [ADAPTERS.get(n)(cfg.section(n)) for n in cfg.adapters]
    run = run_needs(method, adapters)
    assert list(run.adapters) == ["trace", "keep_routing"]
    assert run.reference and run.extra_rows == 5 and run.capture == {"retain", "forget"}
    assert run.capture_grad == {"retain", "forget"}  # keep_routing keeps the graph of the retain capture TRACE reads


def test_run_settings_carry_the_configs_values():
    cfg = build_config({"method": "ga", "data": {"manifest": "auto", "batch_size": 3}, "seed": 11,
                        "train": {"loss_chunk": 7, "precision": "bf16", "grad_accum": 2, "load_balancing_coef": 0.5}})
    assert run_settings(cfg) == RunSettings(seed=11, batch_size=3, loss_chunk=7, precision="bf16", grad_accum=2,
                                            load_balancing_coef=0.5)
