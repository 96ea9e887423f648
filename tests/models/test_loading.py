"""load_model / save_model: round trip and one-line errors for user mistakes."""

import os

import pytest
import torch
import transformers

from moe_unlearn.errors import UserError
from moe_unlearn.models import load_model, resolve_device, save_model, tiny_model, tiny_tokenizer


def test_round_trip_from_a_local_dir(tmp_path):
    model, tok = tiny_model("qwen3_moe"), tiny_tokenizer()
    save_model(model, tok, tmp_path / "m")
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "m").iterdir())
    loaded, tok2 = load_model(tmp_path / "m")
    ids = tok2(["Hello there"], return_tensors="pt").input_ids
    assert ids.tolist() == tok(["Hello there"], return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert not loaded.training
    half, _ = load_model(tmp_path / "m", dtype="bfloat16")
    assert next(half.parameters()).dtype == torch.bfloat16


def test_pickle_only_dir(tmp_path):
    tiny_model("olmoe").config.save_pretrained(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="only pickle weights.*safetensors"):
        load_model(tmp_path)


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(UserError, match="does not exist"):
        load_model("./no/such/model")
    with pytest.raises(UserError, match="no \\*.safetensors weights"):
        load_model(tmp_path)


def test_dense_model_is_refused(tmp_path):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)
    save_model(transformers.LlamaForCausalLM(config), tiny_tokenizer(), tmp_path)
    with pytest.raises(UserError, match="has no MoE layers"):
        load_model(tmp_path)


def test_device_and_dtype_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="CUDA is not available"):
        load_model(tmp_path, device="cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown dtype 'fp8'"):
        load_model(tmp_path, dtype="fp8")


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_a_cpu_run_without_accelerators_names_the_cpu_for_deepspeed(monkeypatch, device):
    """DeepSpeed warns on import when it finds no accelerator; a CPU run on such a machine names it."""
    from moe_unlearn.models import loading

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(loading, "_backend_count", lambda kind: 0)
    assert resolve_device(device) == torch.device("cpu")
    assert os.environ["DS_ACCELERATOR"] == "cpu"

    monkeypatch.setenv("DS_ACCELERATOR", "xpu")  # the user's choice stays
    resolve_device(device)
    assert os.environ["DS_ACCELERATOR"] == "xpu"

    monkeypatch.delenv("DS_ACCELERATOR")  # a machine with an accelerator: DeepSpeed finds it itself
    monkeypatch.setattr(loading, "_backend_count", lambda kind: 1 if kind == "mps" else 0)
    resolve_device("cpu")
    assert "DS_ACCELERATOR" not in os.environ
