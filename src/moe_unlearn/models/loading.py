"""Load and save MoE causal LMs: safetensors only, remote code off unless asked."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from moe_unlearn.errors import UserError
from moe_unlearn.models.layout import moe_layers

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; UserError for CUDA asked without CUDA."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for but CUDA is not available on this machine; "
                        "choose device cpu or auto (--device for inspect/eval, model.device= for unlearn)")
    return dev


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"model path '{path}' is not a directory; give a model directory or a hub id")
    files = [p.name for p in path.iterdir()]
    if not any(f.endswith(".safetensors") for f in files):
        if any(f.endswith(PICKLE_SUFFIXES) for f in files):
            raise UserError(f"model directory '{path}' has only pickle weights (*.bin/*.pt); pickle can run code, "
                            "so convert them to safetensors (model.save_pretrained) and retry")
        raise UserError(f"model directory '{path}' has no *.safetensors weights; save the model with save_pretrained")


def load_model(name_or_path: str | Path, *, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer) from a local directory or a hub id."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
    dev = resolve_device(device)
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.exists() or _looks_local(name):
        if not local.exists():
            raise UserError(f"model path '{name}' does not exist; give an existing directory or a hub id")
        _check_local_dir(local)
        name = str(local)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load model '{name}': {first}") from None
    try:
        moe_layers(model)
    except UserError:
        raise UserError(f"model '{name}' ({type(model).__name__}) has no MoE layers; moe-unlearn needs a "
                        "Mixture-of-Experts model") from None
    if dev.type == "cpu" and getattr(model.config, "_experts_implementation", None) == "batched_mm":
        model.set_experts_implementation("grouped_mm")  # batched_mm is ~40x slower on CPU
    return model.to(dev).eval(), tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path) -> Path:
    """save_pretrained model (safetensors) and tokenizer into out_dir; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
