"""Untrusted files: nothing in src/ can unpickle, run YAML tags, shell out or enable remote code by
itself, and a model folder with a malicious pytorch_model.bin is refused before anything loads."""

from __future__ import annotations

import ast
import inspect
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import moe_unlearn
from moe_unlearn.cli.main import run
from moe_unlearn.models import load_model
from moe_unlearn.models.tiny import tiny_model
from reliability_helpers import malicious_pickle

SRC = Path(moe_unlearn.__file__).parent


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


UNPICKLERS = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve"}


def unsafe_calls(source: str) -> list[str]:
    """'line N: why' for each call or import that could run code from a file or a user string."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in UNPICKLERS for n in names):
                found.append(f"line {node.lineno}: imports an unpickler")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = name.rsplit(".", 1)[-1]
        why = None
        if name.split(".")[0] in UNPICKLERS or short in ("read_pickle", "Unpickler"):
            why = f"{name} unpickles"
        elif short == "load" and name.split(".")[0] == "torch" and not _true(_kw(node, "weights_only")):
            why = "torch.load without weights_only=True"
        elif name.startswith("yaml.") and short not in ("safe_dump", "dump"):
            why = f"{name} (YAML is read only by moe_unlearn.config.parse_yaml: safe tags, no duplicate keys or alias bombs)"
        elif _true(_kw(node, "trust_remote_code")):
            why = "trust_remote_code=True hard-coded"
        elif _true(_kw(node, "shell")):
            why = "shell=True"
        elif _true(_kw(node, "allow_pickle")):
            why = "allow_pickle=True"
        elif name in ("os.system", "os.popen", "eval", "exec", "__import__"):
            why = f"{name}"
        elif short == "from_pretrained" and "Model" in name and not _true(_kw(node, "use_safetensors")):
            why = f"{name} without use_safetensors=True"
        if why:
            found.append(f"line {node.lineno}: {why}")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "from joblib import load",
    "import pandas as pd\npd.read_pickle(p)",
    "torch.load(p)",
    "torch.load(p, weights_only=False)",
    "yaml.load(s, Loader=yaml.Loader)",
    "yaml.unsafe_load(s)",
    "yaml.safe_load(s)",
    "yaml.load(s, Loader=yaml.SafeLoader)",
    "AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True)",
    "AutoModelForCausalLM.from_pretrained(p)",
    "subprocess.run(cmd, shell=True)",
    "os.system('rm ' + name)",
    "np.load(p, allow_pickle=True)",
    "eval(text)",
])
def test_checker_catches_each_unsafe_pattern(snippet):
    assert len(unsafe_calls(snippet)) == 1, snippet


def test_checker_accepts_the_safe_forms():
    safe = ("torch.load(p, map_location='cpu', weights_only=True)\nparse_yaml(s)\nyaml.safe_dump(d)\n"
            "model.eval()\nAutoModelForCausalLM.from_pretrained(p, use_safetensors=True, trust_remote_code=flag)\n"
            "AutoTokenizer.from_pretrained(p)\nsubprocess.run(['git', 'status'])\n")
    assert unsafe_calls(safe) == []


def test_source_tree_has_no_unsafe_calls():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40  # the whole package, not an empty folder
    found = [f"{p.relative_to(SRC)} {why}" for p in files for why in unsafe_calls(p.read_text())]
    assert found == []


def test_the_one_yaml_reader_is_the_strict_loader():
    """config.parse_yaml builds on yaml.SafeLoader (no tags that run code) and is the only YAML
    reader in the package; every other module calls it (the scan above forbids yaml.*load*)."""
    import yaml

    from moe_unlearn.config import StrictLoader

    assert issubclass(StrictLoader, yaml.SafeLoader)
    readers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "Loader" in p.read_text()
               and "yaml" in p.read_text()]
    assert readers == ["config.py"]


def test_trust_remote_code_is_off_unless_asked():
    """Off in the config and in every command flag; only an explicit true/--trust-remote-code turns it on."""
    from moe_unlearn.cli.eval import eval_command
    from moe_unlearn.cli.inspect import inspect_command
    from moe_unlearn.cli.memory import memory
    from moe_unlearn.cli.unlearn import unlearn
    from moe_unlearn.train.config import ModelConfig

    assert ModelConfig().trust_remote_code is False
    for command in (eval_command, inspect_command, memory, unlearn):
        option = inspect.signature(command).parameters["trust_remote_code"].default
        assert option.default is False and option.param_decls == ("--trust-remote-code",)


def test_malicious_pickle_weights_refused_before_loading(world, tmp_path, monkeypatch):
    """pytorch_model.bin that runs code when unpickled: refused, and no unpickler is ever called."""
    calls = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append("pickle.load"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append("pickle.loads"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append("torch.load"))
    sentinel = tmp_path / "PWNED"
    model_dir = tmp_path / "evil"
    shutil.copytree(world.pickled, model_dir)
    malicious_pickle(model_dir / "pytorch_model.bin", sentinel)
    (model_dir / "model.pt").write_bytes((model_dir / "pytorch_model.bin").read_bytes())

    with pytest.raises(moe_unlearn.errors.UserError, match="only pickle weights"):
        load_model(model_dir, device="cpu")
    assert calls == [] and not sentinel.exists()


def test_safetensors_win_over_a_malicious_bin_next_to_them(world, tmp_path):
    """A folder with both model.safetensors and a malicious pytorch_model.bin loads the safetensors."""
    model_dir = tmp_path / "mixed"
    shutil.copytree(world.moe, model_dir)
    sentinel = tmp_path / "PWNED"
    malicious_pickle(model_dir / "pytorch_model.bin", sentinel)
    model, _ = load_model(model_dir, device="cpu")
    assert not sentinel.exists()
    expected = tiny_model("olmoe").state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
