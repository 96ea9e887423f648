"""Hostile model folders and devices: damaged safetensors, tensors of the wrong shape, missing or
non-finite tensors, impossible top-k, broken config.json / tokenizer.json, devices the machine
lacks. One line each, exit 2, inputs untouched, and never a run on random weights the user did
not ask for (`model.allow_missing_weights` / `--allow-missing-weights` opt in)."""

from __future__ import annotations

import json

import pytest
import torch

from reliability_helpers import ROUTER

CASES = {  # broken model (tests/reliability/conftest.py BROKEN_MODELS) -> phrase of its error line
    "truncated": r"cannot load model .*truncated' \(SafetensorError\): .*incomplete metadata",
    "huge-header": r"\(SafetensorError\): .*header too large",
    "tiny-file": r"\(SafetensorError\): .*header too small",
    "lying-header": r"\(SafetensorError\): .*invalid shape, data type, or offset",
    "wrong-shape": rf"tensor '{ROUTER}' has shape \(3, 64\) in the weights but the config needs \(8, 64\)",
    "missing-router": rf"the weights lack tensor '{ROUTER}', which would be initialised at random.*allow_missing_weights",
    "missing-lm-head": r"the weights lack tensor 'lm_head\.weight'",
    "missing-expert": r"cannot be assembled into tensor 'model\.layers\.1\.mlp\.experts\.gate_up_proj'",
    "nan-router": rf"tensor '{ROUTER}' holds NaN or inf values; the weights are damaged",
    "inf-expert": r"tensor 'model\.layers\.1\.mlp\.experts\.down_proj' holds NaN or inf",
    "top-k-0": r"MoE layer 0 picks top_k=0 of 8 experts; .*must be in 1\.\.8",
    "top-k-99": r"MoE layer 0 picks top_k=99 of 8 experts",
    "config-not-json": r"cannot load model .*config\.json' is not a valid JSON file",
    "config-no-type": r"cannot load model .*Should have a `model_type` key",
    "config-negative-size": r"cannot load model .*\(RuntimeError\): Trying to create tensor with negative dimension",
    "tokenizer-damaged": r"cannot load the tokenizer of model .*tokenizer-damaged",
    "hidden-0": r"config\.json's hidden_size is 0; it must be at least 1",
}


CONFIG_CASES = {  # config.json alone: what `memory` and `check` read (the meta device, no weights)
    **{name: CASES[name] for name in ("top-k-0", "top-k-99", "config-not-json", "config-no-type")},
    "experts-not-a-number": r"cannot load model .*\(StrictDataclassFieldValidationError\)",
    "experts-0": r"MoE layer 0 has 0 experts; .*must be at least 1",
    "hidden-0": CASES["hidden-0"],
    "config-negative-size": r"config\.json does not describe a model that can be built \(RuntimeError: "
                            r"Trying to create tensor with negative dimension",
}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "The quick brown fox."}\n{"text": "Mixture of experts."}\n')
    return path


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_inspect_refuses_a_broken_model(name, hostile, text_file, tmp_path, cli):
    cli(["inspect", hostile.model(name), "--data", text_file, "--out", tmp_path / "s.json", "--quiet"],
        phrase=CASES[name], roots=[hostile.model(name)])


@pytest.mark.parametrize("name", ["missing-router", "nan-router", "truncated", "top-k-99"])
def test_unlearn_refuses_a_broken_model_before_writing(name, world, hostile, tmp_path, cli):
    cli(["unlearn", world.good, f"model.path={hostile.model(name)}", "--out", tmp_path / "out", "--quiet"],
        phrase=CASES[name], roots=[hostile.model(name)])


@pytest.mark.parametrize("command", ["memory", "check"])
@pytest.mark.parametrize("name", list(CONFIG_CASES), ids=list(CONFIG_CASES))
def test_memory_and_check_refuse_a_broken_config(command, name, world, hostile, tmp_path, cli):
    """Both read the geometry from config.json on the meta device; a model folder here that the
    run would refuse fails them too (check: not an "unknown" plan line and exit 0)."""
    out = ["--out", tmp_path / "out"] if command == "check" else []
    cli([command, world.good, f"model.path={hostile.model(name)}", *out], phrase=CONFIG_CASES[name],
        roots=[hostile.model(name)])


@pytest.mark.parametrize("flag", ["--model", "--original"])
def test_eval_refuses_a_broken_model(flag, world, hostile, tmp_path, cli):
    other = "--original" if flag == "--model" else "--model"
    cli(["eval", world.good, flag, hostile.model("wrong-shape"), other, world.moe, "--out", tmp_path / "m.json",
         "--quiet"], phrase=CASES["wrong-shape"], roots=[hostile.model("wrong-shape")])


def test_missing_tensors_load_when_the_user_opts_in(hostile, text_file, tmp_path, cli):
    """Opt-in: --allow-missing-weights accepts the missing router (transformers' random init)."""
    out = tmp_path / "s.json"
    cli(["inspect", hostile.model("missing-router"), "--data", text_file, "--out", out, "--quiet",
         "--allow-missing-weights"], code=0, writes=[out], roots=[hostile.model("missing-router")])
    assert json.loads(out.read_text())["tokens"] > 0


def test_unlearn_opt_in_key_for_missing_tensors(world, hostile, tmp_path, cli):
    out = tmp_path / "out"
    cli(["unlearn", world.good, f"model.path={hostile.model('missing-lm-head')}", "model.allow_missing_weights=true",
         "train.max_steps=1", "--out", out, "--quiet"], code=0, writes=[out], roots=[hostile.model("missing-lm-head")])
    assert (out / "model" / "model.safetensors").is_file()


def test_an_unexpected_extra_tensor_is_accepted(hostile, text_file, tmp_path, cli):
    """Accepted: a tensor the architecture does not use (transformers ignores it) changes nothing
    the model computes; every tensor the model needs is present and finite."""
    out = tmp_path / "s.json"
    cli(["inspect", hostile.model("extra-tensor"), "--data", text_file, "--out", out, "--quiet"], code=0,
        writes=[out], roots=[hostile.model("extra-tensor")])


@pytest.mark.parametrize("device,phrase", [
    ("mps", r"device 'mps' asked for but MPS is not available on this machine"),
    ("meta", r"device 'meta' holds shapes but no weights"),
    ("xpu", r"device 'xpu' asked for but XPU is not available"),
    ("cuda:7", r"device 'cuda:7' asked for but CUDA is not available"),
    ("gpu", r"unknown device 'gpu'; use cpu, cuda, cuda:N or auto"),
    ("cuda:-1", r"unknown device 'cuda:-1'"),
    ("hpu", r"device 'hpu' asked for but hpu is not available"),
])
def test_devices_this_machine_lacks(device, phrase, world, text_file, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cli(["inspect", world.moe, "--data", text_file, "--out", tmp_path / "s.json", "--device", device, "--quiet"],
        phrase=phrase)


def test_cuda_index_beyond_the_devices_present(world, text_file, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cli(["eval", world.good, "--model", world.moe, "--out", tmp_path / "m.json", "--device", "cuda:3", "--quiet"],
        phrase=r"device 'cuda:3' does not exist: this machine has 1 CUDA device\(s\), cuda:0\.\.cuda:0")


def test_unlearn_device_must_be_one_it_knows(world, tmp_path, cli):
    cli(["unlearn", world.good, "model.device=mps", "--out", tmp_path / "out", "--quiet"],
        phrase=r"'model\.device' must be one of auto, cpu, cuda, got 'mps'")
