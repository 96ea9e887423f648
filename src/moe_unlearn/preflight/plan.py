"""The plan `moe-unlearn check` prints: model geometry, trained parameters, memory, rows per
split, evaluation, and what would be downloaded. A part that needs a model not on this machine
says "unknown" (and why) rather than fail: the plan is read next to the resource lines, which
say what is missing. A model or data that is here and would make the run fail fails the check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from moe_unlearn.data import load_data
from moe_unlearn.data.config import AUTO
from moe_unlearn.errors import UserError
from moe_unlearn.models import moe_layers
from moe_unlearn.models.loading import check_routing
from moe_unlearn.models.memory import meta_model, model_config
from moe_unlearn.preflight.locate import embedded_manifest, locate
from moe_unlearn.preflight.resources import Resolution
from moe_unlearn.train.config import UnlearnConfig, check_retain_set, config_needs
from moe_unlearn.train.memory import estimate_memory

Line = tuple[str, str]  # (heading, text)


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def model_name(cfg: UnlearnConfig) -> tuple[str | None, bool]:
    """What the geometry is read from: (the model's directory, True) when it is on this machine,
    else (the hub id, False)."""
    found = locate(cfg.model.path, cfg.data)
    return (str(found.directory), True) if found.directory is not None else (found.hub_id, False)


def geometry(name: str, *, trust_remote_code: bool) -> str:
    """Layers, MoE layers, experts, top-k, hidden size, vocabulary and parameters, from the config alone."""
    config = model_config(name, trust_remote_code=trust_remote_code)
    net = meta_model(config, trust_remote_code=trust_remote_code)
    check_routing(net, str(name))
    layers = moe_layers(net)
    experts = sorted({layer.num_experts for layer in layers})
    top_k = sorted({layer.top_k for layer in layers})
    params = sum(p.numel() for p in net.parameters())
    return (f"{int(config.num_hidden_layers)} layers ({len(layers)} MoE: {'/'.join(map(str, experts))} experts, "
            f"top-{'/'.join(map(str, top_k))}), hidden {int(config.hidden_size)}, vocabulary {int(config.vocab_size)}; "
            f"{params / 1e9:.3f}B parameters")


def memory(cfg: UnlearnConfig, name: str) -> list[Line]:
    """Trained parameters and the memory estimate of `moe-unlearn memory`."""
    est = estimate_memory(cfg, model=name)
    trained = "+".join((cfg.method, *cfg.adapters))
    share = f"{100 * est.trainable / est.params:.2f}%" if est.params else "n/a"
    lines = [("trained", f"{est.trainable:,} of {est.params:,} parameters ({share}; {trained}, train.params "
                         f"{cfg.train.params})")]
    return lines + [("memory", f"{item}: {gib}") for item, gib in est.rows()]


def rows(cfg: UnlearnConfig) -> list[Line]:
    """Records per split and kind, read from the local data (the embedded benchmark only once built)."""
    data_cfg = cfg.data
    if data_cfg.manifest == AUTO:
        if not embedded_manifest().is_file():
            return [("rows", "the embedded benchmark is built on first use (`moe-unlearn benchmark build` builds it now)")]
        data_cfg = replace(data_cfg, manifest=str(embedded_manifest()))
    data = load_data(data_cfg)
    check_retain_set(cfg, config_needs(cfg), retain_records=bool(getattr(data.train_split("retain"), cfg.data.train_format)))
    sizes = data.sizes()
    return [("rows", f"{split}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())) for split, kinds in sizes.items()]


def evaluation(cfg: UnlearnConfig) -> list[Line]:
    lines = [("eval", f"metrics {', '.join(cfg.eval.metrics)}; up to {cfg.eval.max_examples or 'all'} examples per set")]
    if "lm_eval" in cfg.eval.metrics:
        c = cfg.eval.lm_eval
        shots = "default" if c.num_fewshot is None else c.num_fewshot
        lines.append(("eval", f"lm-eval tasks {', '.join(c.tasks)} (few-shot {shots}, limit {c.limit or 'none'})"))
    return lines


def downloads(resolution: Resolution) -> list[Line]:
    found = resolution.downloads
    if not found:
        return [("download", "nothing")]
    known = [r.size for r in found if r.size is not None]
    lines = [("download", f"{r.what}: {'size unknown' if r.size is None else human_bytes(r.size)}") for r in found]
    total = f"{human_bytes(sum(known))}" + (" plus the sizes not known" if len(known) < len(found) else "")
    return lines + [("download", f"total {total}")]


def _fail(part: str, make: Callable[[], list[Line]]) -> list[Line]:
    """A part of the plan; its UserError is the check's."""
    return make()


def _or_unknown(part: str, make: Callable[[], list[Line]]) -> list[Line]:
    """A part of the plan, or one line saying why it is unknown (e.g. a hub model's geometry offline)."""
    try:
        return make()
    except UserError as e:
        return [(part, f"unknown: {' '.join(str(e).split())}")]


def plan(cfg: UnlearnConfig, resolution: Resolution, source: Path) -> list[Line]:
    """Every line of the plan, in reading order. Rows are read only when every data resource is
    local; data that is here but cannot be read raises its UserError (the run would fail on it)."""
    name, here = model_name(cfg)
    lines: list[Line] = [("config", str(source)), ("method", "+".join((cfg.method, *cfg.adapters)))]
    if name is None:
        lines.append(("model", "unknown until the embedded benchmark is built"))
    else:
        trust = cfg.model.trust_remote_code
        part = _fail if here else _or_unknown  # a model folder here that the run would refuse fails the check
        lines += part("model", lambda: [("model", f"{name}: {geometry(name, trust_remote_code=trust)}")])
        lines += part("memory", lambda: memory(cfg, name))
    elsewhere = [r for r in resolution.resources if r.status != "local" and any(k.startswith("data.") for k in r.keys)]
    if elsewhere:
        lines.append(("rows", f"known once the data is here ({len(elsewhere)} source(s) not on this machine)"))
    else:
        lines += rows(cfg)
    return lines + evaluation(cfg) + downloads(resolution)
