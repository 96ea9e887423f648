"""Three classes of the second hostile round, each proved for every command it covers:

- no code from a model folder runs (`auto_map`) in memory, inspect, eval or unlearn unless
  --trust-remote-code; nothing is ever asked on stdin; an unknown model_type is one line;
- every temporary file has a fresh name created with O_EXCL | O_NOFOLLOW, so a file or link
  planted at a temporary name is never followed, and concurrent writers never share one;
- paths mean what was typed ('~' is never expanded by us), outputs that are FIFOs or devices are
  refused, and inputs that must be files are checked before any blocking open.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import moe_unlearn
from moe_unlearn.cli.main import run
from moe_unlearn.paths import atomic_path, atomic_write
from reliability_helpers import assert_one_line, snapshot

SRC = Path(moe_unlearn.__file__).parent
EVIL = """open({sentinel!r}, 'w').write('ran')
from transformers import OlmoeConfig, OlmoeForCausalLM
class EvilConfig(OlmoeConfig):  # subclasses: registering them must not touch the real classes
    model_type = "evilmoe"
class EvilModel(OlmoeForCausalLM):
    config_class = EvilConfig
"""


def _planted(world, root: Path, name: str, *, model_type: str | None) -> Path:
    """A copy of the tiny MoE whose config.json points at a sentinel-writing evil.py (auto_map)."""
    folder = root / name
    shutil.copytree(world.moe, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    if model_type is not None:
        cfg["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(EVIL.format(sentinel=str(root / "SENTINEL")))
    return folder


@pytest.fixture()
def no_prompt(monkeypatch):
    """stdin says yes to anything; a prompt is recorded (and would have run the code)."""
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda *a: asked.append(str(a)) or "y")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 10))
    return asked


def _commands(world, model: Path, out: Path) -> dict[str, list[str]]:
    return {
        "memory": ["memory", str(world.good), "--model", str(model)],
        "inspect": ["inspect", str(model), "--data", str(world.root / "text.jsonl"), "--out", str(out / "stats.json"),
                    "--quiet"],
        "eval": ["eval", str(world.manifest), "--model", str(model), "--out", str(out / "metrics.json"), "--quiet"],
        "unlearn": ["unlearn", str(world.good), f"model.path={model}", "--out", str(out / "run"), "--quiet"],
    }


@pytest.mark.parametrize("command", ["memory", "inspect", "eval", "unlearn"])
def test_a_folder_of_unknown_type_with_its_own_code_is_one_line_and_never_runs(world, tmp_path, capsys, no_prompt,
                                                                                command):
    model = _planted(world, tmp_path, "evil", model_type="evilmoe")
    before = snapshot(model)
    code = run(_commands(world, model, tmp_path / "out")[command])
    assert code == 2
    assert_one_line(capsys.readouterr().err, 2, r"ships its own code \(auto_map.*pass --trust-remote-code")
    assert not (tmp_path / "SENTINEL").exists() and no_prompt == []
    assert snapshot(model) == before


@pytest.mark.parametrize("command", ["memory", "inspect"])
def test_a_known_architecture_with_an_auto_map_loads_without_its_code(world, tmp_path, capsys, no_prompt, command):
    model = _planted(world, tmp_path, "known", model_type=None)
    assert run(_commands(world, model, tmp_path / "out")[command]) == 0, capsys.readouterr().err
    assert not (tmp_path / "SENTINEL").exists() and no_prompt == []


def test_trust_remote_code_is_what_lets_the_folder_code_run(world, tmp_path, capsys, no_prompt):
    """The opt-in path is real: the same folder's code runs only with the flag."""
    model = _planted(world, tmp_path, "evil", model_type="evilmoe")
    run(["memory", str(world.good), "--model", str(model), "--trust-remote-code"])
    assert (tmp_path / "SENTINEL").read_text() == "ran" and no_prompt == []


@pytest.mark.parametrize("command", ["memory", "inspect", "eval", "unlearn"])
def test_an_unknown_model_type_is_one_line_in_every_command(world, tmp_path, capsys, command):
    model = tmp_path / "unknown"
    shutil.copytree(world.moe, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-moe"}))
    assert run(_commands(world, model, tmp_path / "out")[command]) == 2
    assert_one_line(capsys.readouterr().err, 2, r"model_type 'no-such-moe' is not an architecture this transformers knows")


def test_only_the_loader_reads_configs_models_and_tokenizers():
    """Every from_pretrained of a config, model or tokenizer is in models/loading.py, which passes
    trust_remote_code explicitly (never None: transformers would ask on stdin)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                found.append(path.relative_to(SRC).as_posix())
                assert any(k.arg == "trust_remote_code" for k in node.keywords), f"{path}:{node.lineno}"
    assert found and set(found) == {"models/loading.py"}


# ---- temporary names ------------------------------------------------------------------------
def _fixed_names(monkeypatch, *hexes: str) -> None:
    """uuid4 draws these hex strings in turn (then random ones): a temporary name an attacker guessed."""
    import uuid

    queue = list(hexes)
    real = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(queue.pop(0)) if queue else real())


@pytest.mark.parametrize("writer", ["atomic_write", "atomic_path"])
def test_a_link_planted_at_the_temporary_name_is_never_followed(tmp_path, monkeypatch, writer):
    victim = tmp_path / "data.jsonl"
    victim.write_text('{"question": "q", "answer": "a"}\n')
    out = tmp_path / "out" / "stats.json"
    out.parent.mkdir()
    guessed = "0" * 31 + "1"
    planted = out.parent / f".stats.json.tmp-{os.getpid()}-{guessed[:12]}.json"
    planted.symlink_to(victim)
    _fixed_names(monkeypatch, guessed)
    if writer == "atomic_write":
        atomic_write(out, "new")
    else:
        with atomic_path(out) as tmp:
            assert tmp != planted and not tmp.is_symlink()
            tmp.write_text("new")
    assert out.read_text() == "new"
    assert victim.read_text() == '{"question": "q", "answer": "a"}\n' and planted.is_symlink()


def test_the_old_fixed_temporary_name_is_no_longer_used(world, tmp_path, capsys):
    """inspect --out out/stats.json once wrote through out/.stats.json.json: a link there to the
    input data changes nothing now."""
    data = tmp_path / "texts.jsonl"
    shutil.copy(world.root / "text.jsonl", data)
    before = snapshot(data)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".stats.json.json").symlink_to(data)
    assert run(["inspect", str(world.moe), "--data", str(data), "--out", str(tmp_path / "out" / "stats.json"),
                "--quiet"]) == 0, capsys.readouterr().err
    assert snapshot(data) == before
    assert json.loads((tmp_path / "out" / "stats.json").read_text())


WRITER = """
import sys
from moe_unlearn.paths import atomic_write
for i in range(200):
    atomic_write(sys.argv[1], sys.argv[2] * 5000)
"""


def test_two_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    out = tmp_path / "shared.json"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), c]) for c in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert out.read_text() in ("a" * 5000, "b" * 5000)  # one writer's whole file, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.json"]  # no temporary file left


# ---- paths as typed, outputs and inputs that are not files --------------------------------------
def test_a_quoted_tilde_is_the_folder_named_tilde_for_the_check_and_the_writer(world, tmp_path, monkeypatch, capsys):
    """--out '~/bench' where ./~/bench is the input benchmark: refused (the check once expanded
    '~' to $HOME while the run wrote ./~/bench, replacing the input's model/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bench = tmp_path / "~" / "bench"
    shutil.copytree(world.manifest.parent, bench)
    before = snapshot(bench)
    config = world.config("tilde.yaml", {**__import__("yaml").safe_load(world.good.read_text()),
                                         "data": {"manifest": str(bench / "manifest.json"), "batch_size": 4}})
    assert run(["unlearn", str(config), "--out", "~/bench", "--quiet", "--overwrite"]) == 2
    assert_one_line(capsys.readouterr().err, 2, r"--out ~/bench (is|contains) the input .*~/bench")
    assert snapshot(bench) == before and not (tmp_path / "home").exists()


def _out_args(world, target: str, run_dir: Path | None = None) -> dict[str, list[str]]:
    return {
        "eval": ["eval", str(world.manifest), "--model", str(world.moe), "--out", target, "--quiet"],
        "inspect": ["inspect", str(world.moe), "--data", str(world.root / "text.jsonl"), "--out", target, "--quiet"],
        "report": ["report", str(run_dir), "--out", target],
        "unlearn": ["unlearn", str(world.good), "--out", target, "--quiet"],
        "benchmark": ["benchmark", "build", "--preset", "tiny", "--out", target],
        "demo": ["demo", "--quick", "--out", target],
    }


@pytest.mark.parametrize("command", ["eval", "inspect", "report", "unlearn", "benchmark", "demo"])
def test_a_fifo_given_as_output_is_refused_and_stays_a_fifo(world, tmp_path, capsys, command, request):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    finished = request.getfixturevalue("reference").out if command == "report" else None
    assert run(_out_args(world, str(fifo), finished)[command]) == 2
    assert_one_line(capsys.readouterr().err, 2, r"is a FIFO; outputs are regular files or directories")
    assert fifo.is_fifo()


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_a_device_given_as_output_is_refused(world, capsys, command):
    assert run(_out_args(world, "/dev/null")[command]) == 2
    assert_one_line(capsys.readouterr().err, 2, r"/dev/null is a device")


def test_a_fifo_given_as_retrained_is_refused_without_blocking(world, tmp_path, capsys):
    fifo = tmp_path / "metrics.json"
    os.mkfifo(fifo)
    code = run(["eval", str(world.manifest), "--model", str(world.moe), "--retrained", str(fifo),
                "--out", str(tmp_path / "m.json"), "--quiet"])  # a blocking open would hang here
    assert code == 2
    assert_one_line(capsys.readouterr().err, 2, r"--retrained .* is a FIFO, not a regular file")


@pytest.mark.parametrize("what", ["config", "data"])
def test_a_fifo_as_config_or_data_file_is_refused_without_blocking(world, tmp_path, capsys, what):
    fifo = tmp_path / ("c.yaml" if what == "config" else "texts.jsonl")
    os.mkfifo(fifo)
    argv = (["unlearn", str(fifo), "--out", str(tmp_path / "run")] if what == "config"
            else ["inspect", str(world.moe), "--data", str(fifo), "--out", str(tmp_path / "s.json"), "--quiet"])
    assert run(argv) == 2
    assert_one_line(capsys.readouterr().err, 2, r"is a FIFO, not a regular file")


def test_an_oversized_json_side_file_is_refused_before_reading(world, tmp_path, capsys, monkeypatch):
    import moe_unlearn.eval.reference as reference

    big = tmp_path / "metrics.json"
    big.write_text(json.dumps({"forget": {"nll": 1.0}, "pad": "x" * 2000}))
    monkeypatch.setattr(reference, "MAX_SIDE_FILE", 1000)
    assert run(["eval", str(world.manifest), "--model", str(world.moe), "--retrained", str(big),
                "--out", str(tmp_path / "m.json"), "--quiet"]) == 2
    assert_one_line(capsys.readouterr().err, 2, r"--retrained .* is \d+ bytes, more than the 1000")
