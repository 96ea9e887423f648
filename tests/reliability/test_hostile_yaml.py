"""Hostile YAML: alias bombs, duplicate keys, cycles, deep nesting and odd tags, in config files,
`base:` files, dotted overrides, eval configs and a run's config.yaml read by `report`.

Each case: the exit code, one stderr line naming the problem, no traceback, and every input
file and folder unchanged (bytes, mtimes); refused commands write nothing at all.
"""

from __future__ import annotations

import time

import pytest
import yaml

from moe_unlearn.config import ALIAS_BUDGET, parse_yaml


def bomb(levels: int = 9, width: int = 9) -> str:
    """The 'billion laughs': a few hundred bytes that expand to width**levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def good_text(world) -> str:
    return world.good.read_text()


CASES = {  # id: (config text from world, phrase)
    "alias-bomb": (lambda w: "method: ga\n" + bomb(), r"is not valid YAML: aliases expand to over 10000 extra values"),
    "alias-bomb-small-file": (lambda w: bomb(levels=6, width=6), r"alias bomb"),
    "alias-cycle": (lambda w: "method: ga\nx: &a [1, *a]\n", r"an alias refers to the value that contains it"),
    "duplicate-top-key": (lambda w: good_text(w) + "method: ga\n",
                          r"key 'method' is given twice \(lines 1 and \d+\)"),
    "duplicate-nested-key": (lambda w: good_text(w).replace("  lr: 0.001\n", "  lr: 0.001\n  lr: 10.0\n"),
                             r"key 'lr' is given twice \(lines \d+ and \d+\)"),
    "duplicate-in-flow-mapping": (lambda w: "method: ga\ntrain: {lr: 1, lr: 2}\n", r"key 'lr' is given twice"),
    "nested-too-deeply": (lambda w: "method: ga\nx: " + "[" * 20_000 + "]" * 20_000 + "\n", r"nested too deeply"),
    "integer-of-5000-digits": (lambda w: "method: ga\nseed: " + "9" * 5000 + "\n",
                               r"a value cannot be read \(Exceeds the limit \(4300 digits\)"),
    "impossible-date": (lambda w: "method: ga\nseed: 2001-13-45\n", r"a value cannot be read \(month must be in 1\.\.12\)"),
    "python-name-tag": (lambda w: "method: !!python/name:os.system\n", r"could not determine a constructor"),
    "binary-tag": (lambda w: good_text(w) + "output_dir: !!binary aGVsbG8=\n", r"'output_dir' must be a string, got b'hello'"),
    "set-tag": (lambda w: good_text(w).replace("method: graddiff", "method: graddiff\nadapters: !!set {grip}"),
                r"'adapters' must be a list"),
    "null-key": (lambda w: good_text(w) + "null: 3\n", r"unknown config key 'None'"),
    "base-not-paths": (lambda w: "base: [a.yaml, 5]\nmethod: ga\n", r"'base' in .* must be a path or a list of paths"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_config_file(case, world, tmp_path, cli):
    text, phrase = CASES[case]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text(world))
    started = time.perf_counter()
    cli(["unlearn", cfg, "--out", tmp_path / "out", "--quiet"], phrase=phrase)
    assert time.perf_counter() - started < 20  # refused from the text, never expanded


def test_alias_bomb_in_a_base_file_names_that_file(world, tmp_path, cli):
    (tmp_path / "base.yaml").write_text(bomb())
    cfg = tmp_path / "top.yaml"
    cfg.write_text("base: base.yaml\nmethod: ga\n")
    cli(["unlearn", cfg, "--out", tmp_path / "out", "--quiet"], phrase=r"config file .*base\.yaml is not valid YAML: .*alias bomb")


def test_duplicate_key_in_a_base_file(world, tmp_path, cli):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 1.0\n  max_steps: 2\n  lr: 2.0\n")
    cfg = tmp_path / "top.yaml"
    cfg.write_text(f"base: base.yaml\nmethod: ga\ndata: {{manifest: {world.manifest}}}\n")
    cli(["unlearn", cfg, "--out", tmp_path / "out", "--quiet"], phrase=r"base\.yaml is not valid YAML: key 'lr' is given twice")


@pytest.mark.parametrize("override,phrase", [
    ("train.params=" + "[&a [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&b{i} [" + ", ".join(["*a" if i == 0 else f"*b{i - 1}"] * 10) + "]" for i in range(6)) + "]",
     r"override 'train\.params': aliases expand to over"),
    ("train.early_stop={forget_nll_at_least: 1, forget_nll_at_least: 2}",
     r"override 'train\.early_stop': key 'forget_nll_at_least' is given twice"),
    ("train.params=&a [*a]", r"override 'train\.params': an alias refers to the value that contains it"),
    ("seed=" + "9" * 5000, r"override 'seed': a value cannot be read"),
])
def test_hostile_override_value(override, phrase, world, tmp_path, cli):
    cli(["unlearn", world.good, override, "--out", tmp_path / "out", "--quiet"], phrase=phrase)


def test_eval_refuses_an_alias_bomb_config(world, tmp_path, cli):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"data: {{manifest: {world.manifest}}}\n" + bomb())
    cli(["eval", cfg, "--model", world.moe, "--out", tmp_path / "m.json", "--quiet"], phrase=r"alias bomb")


def test_merge_keys_and_anchors_are_accepted(world, tmp_path, cli):
    """Accepted: anchors and a `<<:` merge are ordinary YAML; an explicit key beside the merge wins."""
    raw = yaml.safe_load(world.good.read_text())
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"method: graddiff\ndata: &d {{manifest: {world.manifest}, batch_size: 4, retain_batch_size: 4}}\n"
                   f"eval: {yaml.safe_dump(raw['eval'], default_flow_style=True).strip()}\n"
                   "train:\n  <<: {lr: 5.0, max_steps: 1, checkpoint_every: 0}\n  lr: 0.001\n")
    out = tmp_path / "out"
    cli(["unlearn", cfg, "--out", out, "--quiet"], code=0, writes=[out])
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["lr"] == 0.001 and resolved["train"]["max_steps"] == 1


def test_report_ignores_a_hostile_config_yaml(world, hostile, copy_run, tmp_path, cli):
    """Accepted: `report` reads metrics.json and log.jsonl only, so a run whose config.yaml is an
    alias bomb, a duplicate-key file or binary junk still reports (and quickly)."""
    runs = []
    for i, text in enumerate([bomb(), "a: 1\na: 2\n", "\xff\xfe junk"]):
        run_dir = copy_run(hostile.finished, f"run{i}")
        (run_dir / "config.yaml").write_text(text, errors="surrogateescape")
        runs.append(run_dir)
    started = time.perf_counter()
    cli(["report", *runs, "--out", tmp_path / "report"], code=0, writes=[tmp_path / "report"])
    assert time.perf_counter() - started < 60
    assert (tmp_path / "report" / "report.html").is_file()


def test_budget_allows_ordinary_anchors():
    """A handful of anchors (shared settings) stays far below the budget."""
    text = "a: &x {lr: 1, steps: 2}\n" + "".join(f"b{i}: *x\n" for i in range(100))
    assert len(parse_yaml(text)) == 101
    assert ALIAS_BUDGET >= 1000
