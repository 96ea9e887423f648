"""Tiny random MoE causal LMs built from transformers configs (nothing downloaded).

Used by tests and the embedded benchmark. `tiny_model("olmoe")` builds a 2-layer, 8-expert,
top-2 model with hidden size 64 in eval mode; the same seed gives the same weights.
TINY_ARCHS have hand-checked configs; GENERIC_ARCHS are shrunk generically from their defaults.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from moe_unlearn.errors import UserError
from moe_unlearn.models.archs import GENERIC_ARCHS, GENERIC_EXTRA, NUM_EXPERTS_NAMES, TINY_SPECS, TOP_K_NAMES
from moe_unlearn.registry import suggest

TINY_ARCHS: list[str] = list(TINY_SPECS)


def tiny_config(arch: str, *, num_experts: int = 8, top_k: int = 2, layers: int = 2, hidden: int = 64,
                vocab: int = 256, heads: int = 4, intermediate: int | None = None, max_positions: int = 512,
                **overrides: Any) -> transformers.PretrainedConfig:
    """The transformers config of a small `arch` model (heads of hidden/heads; expert and dense
    intermediate size `intermediate`, default hidden). `overrides` are further config keys
    (e.g. token ids, tie_word_embeddings, router_aux_loss_coef)."""
    known = TINY_ARCHS + GENERIC_ARCHS
    if arch not in known:
        raise UserError(f"unknown tiny architecture '{arch}'{suggest(arch, known)}; choose one of: {', '.join(known)}")
    width = hidden if intermediate is None else intermediate
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=width, moe_intermediate_size=width,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        head_dim=hidden // heads, max_position_embeddings=max_positions, num_experts_per_tok=top_k,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if arch in GENERIC_ARCHS:
        config_cls = CONFIG_MAPPING[arch]
        accepted = set(inspect.signature(config_cls.__init__).parameters)
        kwargs.update(GENERIC_EXTRA, shared_expert_intermediate_size=hidden,
                      **dict.fromkeys(NUM_EXPERTS_NAMES, num_experts), **dict.fromkeys(TOP_K_NAMES, top_k))
        kwargs.update(overrides)
        return config_cls(**{k: v for k, v in kwargs.items() if k in accepted})
    spec = TINY_SPECS[arch]
    kwargs[spec.experts_key] = num_experts
    kwargs.update(spec.extra)
    kwargs.update(overrides)
    return getattr(transformers, spec.config_cls)(**kwargs)


def tiny_model(arch: str, *, seed: int = 0, num_experts: int = 8, top_k: int = 2, layers: int = 2,
               hidden: int = 64, vocab: int = 256) -> PreTrainedModel:
    """A tiny random `arch` causal LM in eval mode, float32, deterministic for a given seed."""
    config = tiny_config(arch, num_experts=num_experts, top_k=top_k, layers=layers, hidden=hidden, vocab=vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII (ids < 100, fits vocab 256), built offline.

    pad=0, bos=1, eos=2 match `tiny_config`; saves and loads with AutoTokenizer.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
