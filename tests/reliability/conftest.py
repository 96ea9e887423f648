"""Input files for the reliability tests, made once per session: tiny models, data, configs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import transformers

from reliability_helpers import malicious_pickle, write_yaml

QUICK_EVAL = {"metrics": ["nll", "mc_acc", "stability"], "max_examples": 16, "batch_size": 16}


@dataclass
class World:
    root: Path
    manifest: Path  # the tiny embedded benchmark (shared, read-only)
    moe: Path  # tiny random OLMoE + tokenizer
    llama: Path  # a dense model (no MoE layers)
    pickled: Path  # config.json + a malicious pytorch_model.bin only
    sentinel: Path  # appears if the malicious pickle ever runs
    good: Path  # a valid 2-step unlearn config on the tiny benchmark

    def config(self, name: str, raw: dict | str) -> Path:
        return write_yaml(self.root / name, raw)


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_benchmark) -> World:
    from moe_unlearn.models.tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("world")
    tok = tiny_tokenizer()
    moe = root / "moe"
    tiny_model("olmoe").save_pretrained(moe)
    tok.save_pretrained(moe)
    llama = root / "llama"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2)).save_pretrained(llama)
    tok.save_pretrained(llama)
    pickled = root / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((moe / "config.json").read_text())
    sentinel = root / "PWNED"
    malicious_pickle(pickled / "pytorch_model.bin", sentinel)

    qa = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker."} for i in range(8)]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    (root / "text.jsonl").write_text('{"text": "The quick brown fox."}\n')
    (root / "empty.jsonl").write_text("\n")
    (root / "broken.jsonl").write_text(json.dumps(qa[0]) + '\n{"question": "Who?", "answ\n')
    (root / "renamed.jsonl").write_text('{"prompt": "Who?", "answer": "Nobody."}\n')
    (root / "badtype.jsonl").write_text('{"question": 3, "answer": "Nobody."}\n')
    (root / "binary.jsonl").write_bytes(b"\xff\xfe\x00\x81garbage\n")
    (root / "mc.jsonl").write_text('{"question": "2+2?", "choices": ["3", "4"], "answer": 5}\n')
    good = write_yaml(root / "good.yaml", {
        "method": "graddiff",
        "data": {"manifest": str(tiny_benchmark), "batch_size": 4, "retain_batch_size": 4},
        "train": {"lr": 1e-3, "max_steps": 2, "checkpoint_every": 1},
        "eval": dict(QUICK_EVAL),
    })
    return World(root=root, manifest=tiny_benchmark, moe=moe, llama=llama, pickled=pickled,
                 sentinel=sentinel, good=good)



@dataclass
class Reference:
    config: Path  # GradDiff + TRACE, 8 steps, no periodic checkpoints
    out: Path
    metrics: dict


@pytest.fixture(scope="session")
def reference(world, tmp_path_factory) -> Reference:
    """One uninterrupted run through the CLI: what interrupted/resumed and repeated runs must equal."""
    from moe_unlearn.cli.main import run

    config = world.config("reference.yaml", {
        "method": "graddiff",
        "adapters": ["trace"],
        "data": {"manifest": str(world.manifest), "batch_size": 4, "retain_batch_size": 4},
        "train": {"lr": 1e-3, "max_steps": 8, "checkpoint_every": 0},
        "eval": dict(QUICK_EVAL),
    })
    out = tmp_path_factory.mktemp("reference") / "run"
    assert run(["unlearn", str(config), "--out", str(out), "--quiet"]) == 0
    return Reference(config, out, json.loads((out / "metrics.json").read_text()))
