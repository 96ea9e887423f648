"""Input files for the reliability tests, made once per session: tiny models, data, configs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import transformers
import yaml

from reliability_helpers import ROUTER, assert_one_line, changed, malicious_pickle, snapshot, write_yaml

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


# ---- the adversarial suite (test_hostile_*.py): broken models, hostile data, runs to resume --------
@dataclass
class Hostile:
    root: Path
    models: Path  # one broken copy of world.moe per case, by name
    data: Path  # hostile data files
    finished: Path  # a finished 2-step run of world.good (checkpoints/step-000002, model/, metrics.json)
    stopped: Path  # a run of `stopped_config` (3 steps) stopped by Ctrl-C in step 3: step-000002 kept
    stopped_config: Path

    def model(self, name: str) -> Path:
        return self.models / name


def _edit_tensors(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def _lying_header(folder: Path) -> None:
    """A valid header whose last tensor claims bytes far beyond the end of the file."""
    import struct

    raw = (folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[last]["data_offsets"][1] += 10**12
    text = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


BROKEN_MODELS = {
    "truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:50_000]),
    "huge-header": lambda d: (d / "model.safetensors").write_bytes(
        (2**62).to_bytes(8, "little") + (d / "model.safetensors").read_bytes()[8:]),
    "tiny-file": lambda d: (d / "model.safetensors").write_bytes(b"abc"),
    "lying-header": _lying_header,
    "wrong-shape": lambda d: _edit_tensors(d, lambda t: t.__setitem__(ROUTER, t[ROUTER][:3].clone())),
    "missing-router": lambda d: _edit_tensors(d, lambda t: t.pop(ROUTER)),
    "missing-lm-head": lambda d: _edit_tensors(d, lambda t: t.pop("lm_head.weight")),
    "nan-router": lambda d: _edit_tensors(d, lambda t: t[ROUTER].__setitem__((0, 0), float("nan"))),
    "inf-expert": lambda d: _edit_tensors(
        d, lambda t: t["model.layers.1.mlp.experts.3.down_proj.weight"].__setitem__((0, 0), float("inf"))),
    "missing-expert": lambda d: _edit_tensors(d, lambda t: t.pop("model.layers.1.mlp.experts.5.up_proj.weight")),
    "extra-tensor": lambda d: _edit_tensors(d, lambda t: t.__setitem__("model.extra.weight", t[ROUTER].clone())),
    "top-k-0": lambda d: _edit_config(d, num_experts_per_tok=0),
    "top-k-99": lambda d: _edit_config(d, num_experts_per_tok=99),
    "config-not-json": lambda d: (d / "config.json").write_text("{\"model_type\": \"olmoe\", "),
    "config-no-type": lambda d: _edit_config(d, model_type=None, architectures=None),
    "config-negative-size": lambda d: _edit_config(d, intermediate_size=-8),
    "experts-not-a-number": lambda d: _edit_config(d, num_experts="abc"),
    "experts-0": lambda d: _edit_config(d, num_experts=0),
    "hidden-0": lambda d: _edit_config(d, hidden_size=0),
    "tokenizer-damaged": lambda d: (d / "tokenizer.json").write_text("{\"version\": \"1.0\", \"model\": 5}"),
}


@pytest.fixture(scope="session")
def hostile(world, tmp_path_factory) -> Hostile:
    """Everything the adversarial suite feeds the CLI, made once per test session."""
    import shutil

    from moe_unlearn.cli.main import run
    from moe_unlearn.train.engine import Trainer

    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    for name, damage in BROKEN_MODELS.items():
        shutil.copytree(world.moe, models / name)
        damage(models / name)

    data = root / "data"
    data.mkdir()
    long = "word " * 40_000  # 200 000 characters: beyond the csv module's default field limit (131 072)
    (data / "long_field.csv").write_text(f"text\n\"{long}\"\nshort line\n")
    (data / "huge_line.jsonl").write_text(json.dumps({"text": "many words here " * 2**18}) + "\n")  # 4 MiB
    qa = [{"question": f"Who is person {i}?", "answer": f"Person {i} is a baker."} for i in range(8)]
    (data / "huge_question.jsonl").write_text(
        json.dumps({"question": "Tell me, " * 250_000 + "who?", "answer": "Nobody."}) + "\n"
        + "".join(json.dumps(r) + "\n" for r in qa))  # a 2 MiB question
    (data / "surrogate_text.jsonl").write_text('{"text": "fine"}\n{"text": "broken \\ud800 text"}\n')
    (data / "surrogate_qa.jsonl").write_text('{"question": "Who \\udfff?", "answer": "Me."}\n')
    (data / "surrogate_mc.jsonl").write_text('{"question": "Which?", "choices": ["a", "\\ud83d"], "answer": 0}\n')
    (data / "emoji.jsonl").write_text('{"text": "a valid pair \\ud83d\\ude00 of escapes"}\n')
    (data / "deep.jsonl").write_text("[" * 100_000 + "\n")
    (data / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (data / "bigint.jsonl").write_text('{"text": ' + "9" * 5000 + "}\n")
    (data / "inf_text.jsonl").write_text('{"text": Infinity}\n')
    (data / "binary.csv").write_bytes(b"text\n\xff\xfe\x81\n")
    (data / "header_only.csv").write_text("text\n")
    (data / "empty.csv").write_text("")
    (data / "nul.csv").write_text("text\na\x00b\n")

    finished = root / "finished"
    assert run(["unlearn", str(world.good), "--out", str(finished), "--quiet"]) == 0
    stopped_config = world.config("stopped.yaml", {**yaml.safe_load(world.good.read_text()),
                                                   "train": {"lr": 1e-3, "max_steps": 3, "checkpoint_every": 1}})
    stopped = root / "stopped"
    real_step = Trainer.step

    def ctrl_c_in_step_3(self):
        if self.ctx.step == 2:
            raise KeyboardInterrupt
        return real_step(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "step", ctrl_c_in_step_3)
        assert run(["unlearn", str(stopped_config), "--out", str(stopped), "--quiet"]) == 1
    assert [p.name for p in (stopped / "checkpoints").iterdir()] == ["step-000002"]
    return Hostile(root, models, data, finished, stopped, stopped_config)


@pytest.fixture
def copy_run(tmp_path):
    """copy_run(src) -> a fresh copy of a session run directory under tmp_path (mtimes kept)."""
    import shutil

    def make(src: Path, name: str = "run") -> Path:
        return Path(shutil.copytree(src, tmp_path / name, symlinks=True))

    return make


@pytest.fixture
def cli(world, tmp_path, capsys):
    """cli(argv, code=2, phrase=..., writes=[...], roots=[...]) -> the stderr line.

    Runs argv in-process and asserts the exit code, no traceback anywhere, exactly one stderr
    line matching `phrase` (for codes 1 and 2), and that nothing under world.root, the
    benchmark, tmp_path and `roots` changed (bytes, mtimes, links) except the paths in `writes`.
    """
    from moe_unlearn.cli.main import run

    def call(argv: list, *, code: int = 2, phrase: str = "", writes: tuple = (), roots: tuple = ()) -> str | None:
        watched = [world.root, world.manifest.parent, tmp_path, *roots]
        before = snapshot(*watched, skip=[Path(w) for w in writes])
        capsys.readouterr()
        got = run([str(a) for a in argv])
        captured = capsys.readouterr()
        assert got == code, captured.err[-3000:]
        assert "Traceback" not in captured.err + captured.out
        line = assert_one_line(captured.err, code, phrase) if code else None
        assert changed(before, snapshot(*watched, skip=[Path(w) for w in writes])) == []
        assert not world.sentinel.exists()
        return line

    return call
