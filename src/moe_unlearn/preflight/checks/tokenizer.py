"""The tokenizer of the model the job trains or evaluates, and its chat template when a key asks for it."""

from __future__ import annotations

import json
from pathlib import Path

from moe_unlearn.preflight.locate import locate, weights_problem
from moe_unlearn.preflight.remote import Hub
from moe_unlearn.preflight.resources import CHECKERS, Job, Resource

VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def has_chat_template(directory: Path) -> bool:
    """A chat template in its own file or in tokenizer_config.json (as transformers reads it)."""
    if any((directory / name).is_file() for name in TEMPLATE_FILES):
        return True
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


@CHECKERS.register("tokenizer")
def tokenizer(job: Job, hub: Hub) -> list[Resource]:
    """Checked where the model's files are on this machine; a model still to download brings its
    tokenizer along (the model's own resource says whether it can be had)."""
    ref = job.models[0]
    found = locate(ref.path, job.data)
    if found.directory is None or weights_problem(found.directory) is not None:
        return []  # not here yet, or the model's own line says what is wrong with the folder
    what, key = f"tokenizer of model '{found.name}'", ref.key
    if not any((found.directory / name).is_file() for name in VOCABULARY_FILES):
        return [Resource(what, "missing", (key,), f"{found.directory} has none of {', '.join(VOCABULARY_FILES)}",
                         f"save the tokenizer with the model (tokenizer.save_pretrained), or set {key} to a model that has one")]
    out = [Resource(what, "local", (key,), f"with the model ({found.where})")]
    if job.chat_template_key is not None:
        template = f"chat template of model '{found.name}'"
        if has_chat_template(found.directory):
            out.append(Resource(template, "local", (job.chat_template_key,), "in the tokenizer's files"))
        else:
            out.append(Resource(template, "missing", (job.chat_template_key,), "the tokenizer has none",
                                f"set {job.chat_template_key}=false, or use a model whose tokenizer has a chat template"))
    return out
