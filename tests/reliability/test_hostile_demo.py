"""Demo overrides are validated as `unlearn` validates its own: a typo anywhere in the spec is one
line and exit 2 before the benchmark is built or any run starts, and --out is never created."""

from __future__ import annotations

import pytest

CASES = [  # (overrides, phrase)
    (["comon.train.lr=1e-3"], r"unknown demo key 'comon' \(did you mean 'common'\?\)"),
    (["common.train.lrr=1"], r"demo 'common': unknown config key 'train\.lrr' \(did you mean 'lr'\?\)"),
    (["common.trian.lr=1"], r"demo 'common': unknown config key 'trian' \(did you mean 'train'\?\)"),
    (["common.train.lr=.inf"], r"demo 'common': 'train\.lr' must be a finite number"),
    (["common.seed=-1"], r"demo 'common': 'seed' must be in 0\.\.2\*\*32-1"),
    (["common.npo.betaa=1"], r"demo 'common': unknown config key 'npo\.betaa' \(did you mean 'beta'\?\)"),
    (["common=5"], r"demo 'common' must be an unlearn config mapping"),
    (["matrix.methods=[gaa]"], r"unknown method 'gaa' \(did you mean 'ga'\?\)"),
    (["quick.adapters=[[gripp]]"], r"unknown adapter 'gripp' \(did you mean 'grip'\?\)"),
    (["quick.adapters=[grip]"], r"demo 'quick\.adapters' must be a list of adapter lists"),
    (["quick.methodz=[ga]"], r"unknown demo key 'quick\.methodz' \(did you mean 'methods'\?\)"),
    (["quick=[]"], r"demo 'quick' must map methods and adapters"),
    (["methods.npoo.train.lr=1"], r"unknown method 'npoo' \(did you mean 'npo'\?\)"),
    (["methods.ga.train.lr=.nan"], r"demo 'methods\.ga': 'train\.lr' must be a finite number"),
    (["methods.ga.trian.lr=1"], r"demo 'methods\.ga': unknown config key 'trian'"),
    (["adapter_lr_scale.grip=-1"], r"demo 'adapter_lr_scale\.grip' must be a positive number, got -1"),
    (["adapter_lr_scale.gripp=2"], r"unknown adapter 'gripp'"),
    (["adapter_lr_scale.keep_routing.gaa=2"], r"unknown method 'gaa' \(did you mean 'ga'\?\)"),
    (["adapter_lr_scale.keep_routing.ga=0"], r"demo 'adapter_lr_scale\.keep_routing\.ga' must be a positive number, got 0"),
    (["preset=tinyy"], r"unknown benchmark preset 'tinyy' \(did you mean 'tiny'\?\)"),
    (["preset=tiny", "--forget-domain", "pathogen"], r"pathogen"),
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_demo_override_typo_is_refused_before_anything_runs(case, world, tmp_path, cli):
    overrides, phrase = case
    out = tmp_path / "demo"
    cli(["demo", "--quick", "--out", out, *overrides], phrase=phrase)
    assert not out.exists()
