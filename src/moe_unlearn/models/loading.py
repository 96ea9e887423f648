"""Load and save MoE causal LMs: safetensors only, remote code off unless asked.

Every config, model and tokenizer read goes through this module, with `trust_remote_code`
passed explicitly (never None, so transformers never asks on stdin), and a folder's own code
(`auto_map`) or an unknown `model_type` is one line, never a prompt or a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from moe_unlearn.errors import UserError, first_line
from moe_unlearn.hub import offline_reason
from moe_unlearn.models.layout import moe_layers

DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


_BACKENDS = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}


def _backend_count(kind: str) -> int:
    """How many devices of `kind` this machine has (0: none, or torch cannot use them)."""
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return 1 if torch.backends.mps.is_available() else 0
    module = getattr(torch, kind, None)
    available = getattr(module, "is_available", None)
    return int(module.device_count()) if callable(available) and available() else 0


def _name_cpu_for_deepspeed() -> None:
    """DeepSpeed (imported by accelerate and transformers whenever it is installed) probes for an
    accelerator on import and prints a warning when it finds none; on a machine without one, name
    the CPU for it (what it would pick anyway) unless the user set DS_ACCELERATOR."""
    if not any(_backend_count(kind) for kind in _BACKENDS):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; UserError for a device this machine does not have."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cpu":
        _name_cpu_for_deepspeed()
        return dev
    if dev.type == "meta":
        raise UserError(f"device '{device}' holds shapes but no weights, so nothing can run on it; choose cpu, cuda or auto")
    count = _backend_count(dev.type) if dev.type in _BACKENDS else 0
    name = _BACKENDS.get(dev.type, dev.type)
    if count == 0:
        raise UserError(f"device '{device}' asked for but {name} is not available on this machine; "
                        "choose device cpu or auto (--device for inspect/eval, model.device= for unlearn)")
    if dev.index is not None and dev.index >= count:
        raise UserError(f"device '{device}' does not exist: this machine has {count} {name} device(s), "
                        f"{dev.type}:0..{dev.type}:{count - 1}")
    return dev


def looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def check_model_dir(path: Path) -> None:
    """UserError unless `path` is a folder with safetensors weights (pickle-only weights are refused)."""
    if not path.is_dir():
        raise UserError(f"model path '{path}' is not a directory; give a model directory or a hub id")
    files = [p.name for p in path.iterdir()]
    if not any(f.endswith(".safetensors") for f in files):
        if any(f.endswith(PICKLE_SUFFIXES) for f in files):
            raise UserError(f"model directory '{path}' has only pickle weights (*.bin/*.pt); pickle can run code, "
                            "so convert them to safetensors (model.save_pretrained) and retry")
        raise UserError(f"model directory '{path}' has no *.safetensors weights; save the model with save_pretrained")


@contextlib.contextmanager
def _quiet_loading() -> Iterator[list[str]]:
    """Collect (instead of printing) transformers' multi-line load report: each problem it
    reports becomes one error line of ours."""
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger("transformers")  # also configures the library's own handler
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    saved = (root.handlers[:], root.level, root.propagate)
    root.handlers[:], root.propagate = [Keep(logging.WARNING)], False
    root.setLevel(min(root.getEffectiveLevel(), logging.WARNING))
    try:
        yield seen
    finally:
        root.handlers[:], root.propagate = saved[0], saved[2]
        root.setLevel(saved[1])


def _conversion_failure(report: list[str]) -> str:
    """The tensor transformers could not assemble (fused experts from per-expert tensors)."""
    keys = [m.group(1) for text in report for m in re.finditer(r"^(\S+)\s*\|\s*CONVERSION", text, re.MULTILINE)]
    what = f"tensor '{keys[0]}'" if keys else "a tensor"
    return f"its weights cannot be assembled into {what} (a part of it is missing or has the wrong shape)"


def _check_loading_info(info: dict[str, Any], name: str, allow_missing: bool) -> None:
    """Refuse tensors of the wrong shape, and tensors the weights lack unless the user opted in
    (transformers would initialise them at random)."""
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        key, found, wanted = mismatched[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise UserError(f"model '{name}': tensor '{key}' has shape {tuple(found)} in the weights but the config "
                        f"needs {tuple(wanted)}{more}; the weights and config.json do not belong together")
    missing = sorted(info.get("missing_keys") or [])
    if missing and not allow_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"model '{name}': the weights lack tensor '{missing[0]}'{more}, which would be initialised "
                        "at random; repair the model, or accept random values with model.allow_missing_weights=true "
                        "(unlearn) / --allow-missing-weights (inspect, eval)")


def check_sizes(config: PretrainedConfig, name: str) -> None:
    """A model of zero width, depth or vocabulary builds (torch warns about its empty tensors),
    then divides by the zero: refuse it from config.json first."""
    for key in ("hidden_size", "num_hidden_layers", "vocab_size"):
        size = getattr(config, key, None)
        if isinstance(size, int) and size < 1:
            raise UserError(f"model '{name}': config.json's {key} is {size}; it must be at least 1")


def check_routing(model: torch.nn.Module, name: str) -> None:
    """Every MoE layer has experts and routes to 1..E of them: config.json may say otherwise, and
    the model is built all the same."""
    for i, layer in enumerate(moe_layers(model)):
        if layer.num_experts < 1:
            raise UserError(f"model '{name}': MoE layer {i} has {layer.num_experts} experts; config.json's expert "
                            "count (e.g. num_experts) must be at least 1")
        if not 1 <= layer.top_k <= layer.num_experts:
            raise UserError(f"model '{name}': MoE layer {i} picks top_k={layer.top_k} of {layer.num_experts} experts; "
                            f"config.json's top-k (e.g. num_experts_per_tok) must be in 1..{layer.num_experts}")


def _check_weights(model: PreTrainedModel, name: str) -> None:
    """Every MoE layer routes to 1..E experts and every floating tensor is finite."""
    check_routing(model, name)
    bad = first_nonfinite([*model.named_parameters(), *model.named_buffers()])
    if bad is not None:
        raise UserError(f"model '{name}': tensor '{bad}' holds NaN or inf values; the weights are damaged")


def _known_failure(e: Exception, name: str) -> UserError | None:
    """The one-line error for a folder whose code would have to run, or an unknown model type."""
    text = str(e)
    if "trust_remote_code" in text or "custom code" in text:
        return UserError(f"model '{name}' ships its own code (auto_map in config.json) and moe-unlearn runs none "
                         "unless asked: pass --trust-remote-code (model.trust_remote_code: true) if you trust it")
    kind = re.search(r"model type `?'?([^`'\s]+)", text)
    if kind and ("Unrecognized model" in text or "does not recognize this architecture" in text):
        return UserError(f"model '{name}': model_type '{kind.group(1)}' is not an architecture this transformers "
                         "knows; upgrade transformers or give a supported MoE model")
    return None  # e.g. no model_type at all: the loader's own first line says so


def _hub_options(name: str) -> dict[str, Any]:
    """`local_files_only` for a hub id on an offline machine: its cached files, never a request."""
    return {"local_files_only": True} if not Path(name).exists() and offline_reason() is not None else {}


def _not_cached(name: str) -> UserError | None:
    """The one-line error for a hub id that is not in the cache of an offline machine."""
    reason = None if Path(name).exists() else offline_reason()
    if reason is None:
        return None
    return UserError(f"model '{name}' is not in this machine's Hugging Face cache and the machine is offline "
                     f"({reason}); set model.path (--model for inspect/eval) to a local copy")


def load_config(name: str | Path, *, trust_remote_code: bool = False) -> PretrainedConfig:
    """A model's transformers config (local dir or hub id); no code from the folder runs unless asked."""
    try:
        return AutoConfig.from_pretrained(str(name), trust_remote_code=bool(trust_remote_code), **_hub_options(str(name)))
    except Exception as e:  # a hand-edited config.json reaches many validators (json, transformers, the hub's)
        known = _known_failure(e, str(name)) or (_not_cached(str(name)) if isinstance(e, OSError) else None)
        if known is not None:
            raise known from None
        first = first_line(e)
        raise UserError(f"cannot load model '{name}' ({type(e).__name__}): {first[:300]}") from None


def load_tokenizer(name: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A model's tokenizer; no code from the folder runs unless asked."""
    return AutoTokenizer.from_pretrained(str(name), trust_remote_code=bool(trust_remote_code), **_hub_options(str(name)))


def first_nonfinite(tensors: Iterable[tuple[str, torch.Tensor]], chunk: int = 2**26) -> str | None:
    """The name of the first floating tensor holding NaN or inf, or None. Checked in chunks, so
    the check never needs more than `chunk` bytes of scratch memory (a full GPU stays usable)."""
    with torch.no_grad():
        for name, t in tensors:
            t = t.to_local() if hasattr(t, "to_local") else t  # a sharded DTensor: this process's shard
            if t.is_floating_point() and not all(bool(torch.isfinite(part).all())
                                                 for part in t.detach().reshape(-1).split(chunk)):
                return name
    return None


def load_model(name_or_path: str | Path, *, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, allow_missing: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer) from a local directory or a hub id.

    Damaged weights (truncated file, bad header, wrong shapes, NaN/inf), a missing tensor
    (unless allow_missing) and an impossible top-k are UserErrors, never a model that runs on
    random or broken values.
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
    dev = resolve_device(device)
    name = str(name_or_path)
    local = Path(name)  # as typed: '~' and $VARS are the shell's to expand, never ours
    if local.exists() or looks_local(name):
        if not local.exists():
            raise UserError(f"model path '{name}' does not exist; give an existing directory or a hub id")
        check_model_dir(local)
        name = str(local)
    what = "model"
    try:
        with _quiet_loading() as report:
            config = load_config(name, trust_remote_code=trust_remote_code)
            check_sizes(config, name)
            model, info = AutoModelForCausalLM.from_pretrained(
                name, config=config, dtype=DTYPES[dtype], use_safetensors=True,
                trust_remote_code=bool(trust_remote_code), output_loading_info=True, ignore_mismatched_sizes=True,
                **_hub_options(name))
        _check_loading_info(info, name, allow_missing)
        what = "the tokenizer of model"
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    except UserError:
        raise
    except Exception as e:  # a damaged file reaches many loaders (safetensors, json, tokenizers, torch)
        known = _known_failure(e, name) or (_not_cached(name) if isinstance(e, OSError) else None)
        if known is not None:
            raise known from None
        first = first_line(e)
        if "CONVERSION" in first:
            raise UserError(f"cannot load model '{name}': {_conversion_failure(report)}") from None
        raise UserError(f"cannot load {what} '{name}' ({type(e).__name__}): {first[:300]}") from None
    try:
        moe_layers(model)
    except UserError:
        raise UserError(f"model '{name}' ({type(model).__name__}) has no MoE layers; moe-unlearn needs a "
                        "Mixture-of-Experts model") from None
    if dev.type == "cpu" and getattr(model.config, "_experts_implementation", None) == "batched_mm":
        model.set_experts_implementation("grouped_mm")  # batched_mm is ~40x slower on CPU
    model = model.to(dev).eval()
    _check_weights(model, name)
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path) -> Path:
    """save_pretrained model (safetensors) and tokenizer into out_dir; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
