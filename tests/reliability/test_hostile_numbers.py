"""Hostile numbers: non-finite and out-of-range values anywhere in a config are refused at load
(generic: every float finite and within float32, every integer within int64), seeds are in
numpy's range, `params` selectors are bounded without expanding them, and a run whose last
update is non-finite saves nothing (exit 1, the last good checkpoint kept)."""

from __future__ import annotations

import time

import pytest

U = ["unlearn", "{good}"]
CASES = [  # (id, overrides, phrase)
    ("lr-inf", ["train.lr=.inf"], r"'train\.lr' must be a finite number, got inf"),
    ("lr-minus-inf", ["train.lr=-.inf"], r"'train\.lr' must be a finite number, got -inf"),
    ("lr-nan", ["train.lr=.nan"], r"'train\.lr' must be a finite number, got nan"),
    ("lr-string-overflow", ["train.lr='1e400'"], r"'train\.lr' must be a finite number, got '1e400'"),
    ("lr-huge-integer", ["train.lr=" + "9" * 400], r"'train\.lr' must be a finite number, got an integer of"),
    ("lr-beyond-float32", ["train.lr=1e39"], r"'train\.lr' is out of range: numbers must lie within float32"),
    ("lr-too-large-for-adamw", ["train.lr=1e38"], r"'train\.lr' is too large: AdamW's first step"),
    ("epochs-inf", ["train.max_steps=null", "train.epochs=.inf"], r"'train\.epochs' must be a finite number"),
    ("max-steps-beyond-int64", ["train.max_steps=99999999999999999999"],
     r"'train\.max_steps' is out of range: integers must lie within ±2\*\*63"),
    ("max-steps-float", ["train.max_steps=1e3"], r"'train\.max_steps' must be an integer, got '1e3'"),
    ("grad-norm-nan", ["train.max_grad_norm=.nan"], r"'train\.max_grad_norm' must be a finite number"),
    ("betas-nan", ["train.betas=[0.9, .nan]"], r"'train\.betas\[1\]' must be a finite number"),
    ("weight-decay-inf", ["train.weight_decay=.inf"], r"'train\.weight_decay' must be a finite number"),
    ("early-stop-inf", ["train.eval_every=1", "train.early_stop.forget_nll_at_least=.inf"],
     r"'train\.early_stop\.forget_nll_at_least' must be a finite number"),
    ("seed-negative", ["seed=-1"], r"'seed' must be in 0\.\.2\*\*32-1 \(numpy's range\), got -1"),
    ("seed-too-large", ["seed=4294967296"], r"'seed' must be in 0\.\.2\*\*32-1"),
    ("seed-bool", ["seed=true"], r"'seed' must be an integer, got True"),
    ("mink-nan", ["eval.mink_k=.nan"], r"'eval\.mink_k' must be a finite number"),
    ("relearn-lr-too-large", ["eval.relearn.lr=1e38"], r"'eval\.relearn\.lr' is too large"),
    ("eval-batch-inf", ["eval.batch_size=.inf"], r"'eval\.batch_size' must be an integer, got inf"),
    ("method-beta-inf", ["method=npo", "npo.beta=.inf"], r"'npo\.beta' must be a finite number"),
    ("adapter-number-nan", ["adapters=[grip]", "grip.rel_energy=.nan"], r"'grip\.rel_energy' must be a finite number"),
    ("lora-alpha-zero", ["train.lora={r: 4, alpha: 0, target_modules: [q_proj]}"], r"'train\.lora\.alpha' must be > 0"),
    ("layer-range-huge", ["train.params=[layers:0-99999999999999]"], r"layer 99999999999999 is out of any model's range"),
    ("layer-range-backwards", ["train.params=[layers:5-2]"], r"range 5-2 runs backwards; write 2-5"),
    ("layer-negative", ["train.params=[layers:-1]"], r"bad parameter spec 'layers:-1'"),
    ("layer-unicode-digit", ["train.params=['layers:²']"], r"bad parameter spec 'layers:²'"),
    ("expert-index-huge", ["train.params=[expert:0:99999999999999999]"], r"bad parameter spec 'expert:0:99999999999999999'"),
    ("regex-invalid", ["train.params=['regex:(']"], r"regex:\( is not a valid regular expression"),
    ("spec-unknown", ["train.params=[routerz]"], r"unknown parameter spec 'routerz'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_number_refused_at_config_load(case, world, tmp_path, cli):
    _, overrides, phrase = case
    cli(["unlearn", world.good, *overrides, "--out", tmp_path / "out", "--quiet"], phrase=phrase)


def test_a_large_in_range_layer_span_is_checked_against_the_model_without_expanding(world, tmp_path, cli):
    """layers:0-99998 passes the syntax check; against the 2-layer model it is refused at once,
    naming the span, not a list of 99 997 numbers. (Checked after the model loaded, so the output
    directory holds config.yaml: documented in docs/reliability.md.)"""
    out = tmp_path / "out"
    started = time.perf_counter()
    line = cli(["unlearn", world.good, "train.params=[layers:0-99998]", "--out", out, "--quiet"],
               phrase=r"layers:0-99998: decoder layer\(s\) \d\.\.99998 do not exist; valid 0\.\.\d", writes=[out])
    assert len(line) < 300 and time.perf_counter() - started < 30
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("argv,phrase", [
    (["benchmark", "build", "--out", "{tmp}/b", "--preset", "tiny", "--seed", "-1"], r"Invalid value for '--seed'"),
    (["benchmark", "build", "--out", "{tmp}/b", "--preset", "tiny", "--seed", "4294967296"], r"Invalid value for '--seed'"),
    (["demo", "--out", "{tmp}/d", "--seed", "-1", "preset=tiny"], r"Invalid value for '--seed'"),
    (["benchmark", "build", "--out", "{tmp}/b", "--preset", "tiny", "--forget-fraction", "nan"],
     r"forget fraction must be in \(0, 1\]"),
    (["inspect", "{moe}", "--data", "{root}/text.jsonl", "--out", "{tmp}/s.json", "--max-length", "0"],
     r"Invalid value for '--max-length'"),
])
def test_numbers_on_the_command_line(argv, phrase, world, tmp_path, cli):
    names = {"tmp": tmp_path, "moe": world.moe, "root": world.root}
    cli([a.format(**names) for a in argv], phrase=phrase)


def test_a_non_finite_last_update_exits_1_and_saves_nothing(world, tmp_path, cli):
    """lr x weight_decay = 1e60 overflows every weight in the only step, whose loss was finite:
    only the check of the last update can stop it. Exit 1, no model/, no metrics.json."""
    out = tmp_path / "out"
    cli(["unlearn", world.good, "method=ga", "train.lr=1e30", "train.weight_decay=1e30", "train.max_steps=1",
         "train.checkpoint_every=0", "--out", out, "--quiet"], code=1, writes=[out],
        phrase=r"parameter '.*' is not finite after the update at step 1: training diverged; no checkpoint")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.jsonl"]
