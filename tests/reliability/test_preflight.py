"""The preflight: before any weights load, every missing resource is one stderr line that says why
(offline, gated, not found) and which key to point at a local copy, and the command exits 2 in
seconds without writing anything; `moe-unlearn check` prints the plan and exits 0 only when
every resource is local."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from bench.fixtures import FIXTURES, sources, to_fixtures
from benchmark_recipes import RECIPES_DIR

from moe_unlearn.cli.main import run
from moe_unlearn.config import resolve_yaml
from moe_unlearn.preflight.lm_eval_tasks import TaskData, TaskIndex, installed_tasks_dir

REPO = Path(__file__).resolve().parents[2]
ALL_RECIPES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if not p.name.startswith("_"))
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
NOISE = ("Retrying", "WARNING:huggingface_hub", "Traceback")


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "moe_unlearn.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    return done, time.perf_counter() - start


def _import_seconds(env: dict[str, str]) -> float:
    """What importing the modules a training command loads costs on this machine: most of such a
    command's seconds when it stops early (4 s on one 2-core machine, 10 s under load)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import moe_unlearn.cli.main, moe_unlearn.train.engine, "
                    "moe_unlearn.recipes.jobs, moe_unlearn.eval.context"], env=env, cwd=REPO, check=True, timeout=120)
    return time.perf_counter() - start


def _errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("moe-unlearn: error: ") for line in lines), stderr
    assert len(set(lines)) == len(lines), "a resource reported twice"
    return lines


def _expected_hub_names(raw: dict) -> set[str]:
    """Every hub dataset and the model a raw recipe names."""
    return {s["path"] for s in sources(raw.get("data") or {}, raw.get("eval"))} | {raw["model"]["path"]}


@pytest.mark.parametrize("env_change, reason", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "no network"),  # nothing listens on port 9: no route to the Hub
])
def test_offline_recipe_stops_in_seconds_with_one_line_per_missing_resource(tmp_path, env_change, reason):
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS} | env_change
    out = tmp_path / "X"
    done, seconds = _cli(["unlearn", str(RECIPES_DIR / "wmdp_cyber.yaml"), "--out", str(out)], env)
    assert done.returncode == 2, done.stderr
    assert seconds < _import_seconds(env) + 10  # the checks add seconds at most: no wait on the network
    lines = _errors(done.stderr)
    assert all("the machine is offline" in line and reason in line and "gated" not in line for line in lines)
    raw = resolve_yaml(RECIPES_DIR / "wmdp_cyber.yaml")
    for name in _expected_hub_names(raw):  # each source, the model, and lm-eval's datasets: one line each
        assert sum(f"'{name}'" in line for line in lines) == 1, name
    assert sum("lm-eval" in line and "eval.lm_eval.include_path" in line for line in lines) == 2  # cais/wmdp, cais/mmlu
    assert len(lines) == 7
    assert "set model.path" in done.stderr and "set data.forget.path" in done.stderr
    assert not any(word in done.stderr + done.stdout for word in NOISE)
    assert not out.exists()


def _local_recipe(tmp_path: Path, tiny_benchmark: Path, name: str = "wmdp_cyber", **extra) -> Path:
    """The recipe with its data at the fixture copies (the real datasets' schemas) and the tiny model."""
    raw = to_fixtures(resolve_yaml(RECIPES_DIR / f"{name}.yaml"))
    raw["model"] = {**raw["model"], "path": str(tiny_benchmark.parent / "model"), "dtype": "float32", "device": "cpu"}
    raw["train"] = {**raw["train"], "max_steps": 1, "epochs": None, "precision": "fp32"}
    for key, value in extra.items():
        section, _, field = key.partition("__")
        raw[section] = {**raw.get(section, {}), field: value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _local_tasks(folder: Path) -> Path:
    """lm-eval task YAMLs named like the recipe's tasks that read the fixture copies (mmlu as a group)."""
    folder.mkdir()
    for task, config in (("wmdp_bio", "wmdp-bio"), ("wmdp_cyber", "wmdp-cyber")):
        (folder / f"{task}.yaml").write_text(yaml.safe_dump(
            {"task": task, "include": "_template", "dataset_path": str(FIXTURES / "cais" / "wmdp"), "dataset_name": config}))
    (folder / "_template").write_text("output_type: multiple_choice\ntest_split: test\n")
    (folder / "mmlu.yaml").write_text(yaml.safe_dump({"group": "mmlu", "task": ["mmlu_local"]}))
    (folder / "mmlu_local.yaml").write_text(yaml.safe_dump(
        {"task": "mmlu_local", "dataset_path": str(FIXTURES / "cais" / "mmlu"), "dataset_name": "all"}))
    return folder


def test_local_data_with_unreachable_lm_eval_data_stops_before_training(tmp_path, tiny_benchmark, capsys):
    config = _local_recipe(tmp_path, tiny_benchmark)
    out = tmp_path / "run"
    start = time.perf_counter()
    assert run(["unlearn", str(config), "--out", str(out), "--quiet"]) == 2
    assert time.perf_counter() - start < 10
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 2 and all("lm-eval" in line and "offline" in line for line in lines)
    assert any("'cais/wmdp' (wmdp-bio, wmdp-cyber)" in line for line in lines)
    assert any("'cais/mmlu' (57 configs)" in line for line in lines)
    assert not out.exists()  # no model/, no config.yaml, no lock


def test_check_prints_the_plan_and_passes_with_everything_local(tmp_path, tiny_benchmark, capsys):
    tasks = _local_tasks(tmp_path / "tasks")
    config = _local_recipe(tmp_path, tiny_benchmark)
    out = tmp_path / "run"
    assert run(["check", str(config), f"eval.lm_eval.include_path={tasks}", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    plan = captured.out.splitlines()
    model = next(line for line in plan if line.startswith("model "))
    assert "layers (" in model and "experts, top-" in model and "hidden " in model
    assert any(line.startswith("trained ") and "graddiff+seuf" in line for line in plan)
    assert any(line.startswith("memory ") and "total:" in line and "GiB" in line for line in plan)
    rows = [line for line in plan if line.startswith("rows ")]
    forget_mc = len((FIXTURES / "cais/wmdp/wmdp-cyber/test-00000-of-00001.jsonl").read_text().splitlines())
    assert any(line.split(None, 1)[1].startswith("forget: ") and f"{forget_mc} mc" in line for line in rows), rows
    assert any("train forget:" in line and "text" in line for line in rows)
    assert any("lm-eval tasks wmdp_bio, wmdp_cyber, mmlu" in line for line in plan)
    assert "download  nothing" in plan
    assert any(line.startswith("ok ") and "output folder" in line for line in plan)
    assert not out.exists()


def test_check_without_the_local_tasks_fails_and_names_the_key(tmp_path, tiny_benchmark, capsys):
    assert run(["check", str(_local_recipe(tmp_path, tiny_benchmark))]) == 2
    captured = capsys.readouterr()
    assert "rows " in captured.out  # the plan is still printed
    assert all("eval.lm_eval.include_path" in line for line in _errors(captured.err))


@pytest.mark.parametrize("recipe", ALL_RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_offline_exits_2_quickly_naming_every_hub_resource(recipe, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert run(["check", str(recipe)]) == 2
    assert time.perf_counter() - start < 10
    captured = capsys.readouterr()
    lines = _errors(captured.err)
    for name in _expected_hub_names(resolve_yaml(recipe)):
        assert any(f"'{name}'" in line for line in lines), name
    assert all("offline" in line for line in lines)
    assert any(line.startswith("model ") and "layers" in line for line in captured.out.splitlines())  # known geometry


def test_missing_chat_template_and_unwritable_output_are_named(tmp_path, tiny_benchmark, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    config = _local_recipe(tmp_path, tiny_benchmark, data__chat_template=True)
    tasks = _local_tasks(tmp_path / "tasks")
    assert run(["check", str(config), f"eval.lm_eval.include_path={tasks}", "--out", str(blocker / "run")]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 2
    assert any("chat template" in line and "data.chat_template=false" in line for line in lines)
    assert any("is a file, not a directory; choose another --out" in line for line in lines)


def test_gated_is_said_only_when_the_hub_says_so(tmp_path, tiny_benchmark, capsys, monkeypatch):
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    from moe_unlearn.preflight import remote

    def ask(repo_id, repo_type):
        if repo_id == "cais/wmdp-corpora":
            response = httpx2.Response(401, request=httpx2.Request("GET", f"https://huggingface.co/api/datasets/{repo_id}"))
            return remote.Remote({}, remote._denied(GatedRepoError("restricted", response=response), repo_id, repo_type))
        return remote.Remote({"cyber-forget-corpus/train.jsonl": 2048, "README.md": 100})

    monkeypatch.setattr(remote.Hub, "offline", lambda self: None)  # as on a machine with network
    monkeypatch.setattr(remote.Hub, "_ask", staticmethod(ask))
    config = _local_recipe(tmp_path, tiny_benchmark)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["retain"]["path"] = "cais/wmdp-corpora:cyber-retain-corpus"  # back to the hub id
    raw["eval"]["metrics"] = [m for m in raw["eval"]["metrics"] if m != "lm_eval"]
    config.write_text(yaml.safe_dump(raw))
    assert run(["unlearn", str(config), "--out", str(tmp_path / "run")]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and "access is gated" in lines[0] and "offline" not in lines[0]
    assert "data.retain.path" in lines[0] and not (tmp_path / "run").exists()


def test_eval_and_demo_run_the_preflight_first(tmp_path, tiny_benchmark, capsys):
    config = _local_recipe(tmp_path, tiny_benchmark)
    out = tmp_path / "m" / "metrics.json"
    assert run(["eval", str(config), "--model", str(tiny_benchmark.parent / "model"), "--out", str(out)]) == 2
    assert all("lm-eval" in line for line in _errors(capsys.readouterr().err))
    assert not out.parent.exists()
    demo_out = tmp_path / "demo"
    assert run(["demo", "--out", str(demo_out), "common.eval.metrics=[nll,lm_eval]",
                "common.eval.lm_eval.tasks=[wmdp_bio]"]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and "'cais/wmdp' (wmdp-bio)" in lines[0]
    assert not demo_out.exists()


def test_hub_readers_fail_at_once_without_network(monkeypatch):
    """The loaders themselves (for commands without a preflight, and anything it could not see)."""
    from moe_unlearn.data import load_records
    from moe_unlearn.errors import UserError
    from moe_unlearn.hub import _probe
    from moe_unlearn.models.loading import load_config

    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _probe.cache_clear()
    start = time.perf_counter()
    with pytest.raises(UserError, match="the machine is offline .no network"):
        load_records("cais/wmdp:wmdp-bio", kind="mc", split="test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"not in this machine's Hugging Face cache and the machine is offline"):
        load_config("someone/no-such-moe-model")
    assert time.perf_counter() - start < 5
    _probe.cache_clear()


def test_task_index_follows_groups_tags_includes_and_inline_configs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "_base").write_text("dataset_path: org/base\ntest_split: test\n")
    (tmp_path / "sub" / "a.yaml").write_text("task: task_a\ntag: [my_tag]\ninclude: _base\ndataset_name: a\n")
    (tmp_path / "sub" / "b.yaml").write_text("task: task_b\ntag: my_tag\ndataset_path: org/b\n"
                                             "process_docs: !function utils.process\n")
    (tmp_path / "group.yaml").write_text(yaml.safe_dump({"group": "my_group", "task": [
        "my_tag", {"task": "inline_c", "dataset_path": "org/c", "dataset_name": "c"}, "my_group"]}))
    (tmp_path / "d.yaml").write_text("task: task_d\ndataset_path: org/d\nnum_fewshot: 0\nnum_fewshot: 5\n")
    index = TaskIndex([tmp_path])
    assert index.datasets("task_a") == [TaskData("org/base", "a")]
    assert index.datasets("task_d") == []  # a key given twice: a known task whose data stays unknown (no false alarm)
    assert set(index.datasets("my_tag")) == {TaskData("org/base", "a"), TaskData("org/b")}
    assert set(index.datasets("my_group")) == {TaskData("org/base", "a"), TaskData("org/b"), TaskData("org/c", "c")}
    assert index.datasets("task_") is None and index.datasets("nothing") is None


def test_task_index_reads_the_installed_harness():
    installed = installed_tasks_dir()
    if installed is None:
        pytest.skip("lm-evaluation-harness is not installed (optional: moe-unlearn[lmeval])")
    index = TaskIndex([installed])
    assert index.datasets("wmdp_bio") == [TaskData("cais/wmdp", "wmdp-bio")]
    mmlu = index.datasets("mmlu")
    assert {d.path for d in mmlu} == {"cais/mmlu"} and len(mmlu) == 57


def test_check_help_imports_neither_torch_nor_transformers():
    code = ("import sys; from moe_unlearn.cli.main import run; rc = run(['check', '--help']); "
            "print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "0 []"


def test_check_online_lists_what_would_be_downloaded_and_how_large(tmp_path, tiny_benchmark, capsys, monkeypatch):
    from moe_unlearn.preflight import remote

    files = {"model-00001-of-00002.safetensors": 2 * 2**30, "model-00002-of-00002.safetensors": 2**30,
             "config.json": 1000, "README.md": 5000}
    monkeypatch.setattr(remote.Hub, "offline", lambda self: None)  # as on a machine with network
    monkeypatch.setattr(remote.Hub, "_ask", staticmethod(lambda repo_id, repo_type: remote.Remote(files)))
    config = _local_recipe(tmp_path, tiny_benchmark)
    hub_model = "Qwen/Qwen1.5-MoE-A2.7B-Chat"
    assert run(["check", str(config), f"model.path={hub_model}", "eval.metrics=[nll]"]) == 2
    captured = capsys.readouterr()
    assert f"download  model '{hub_model}' (config and weights): 3.0 GiB" in captured.out  # README not counted
    assert "download  total 3.0 GiB" in captured.out
    assert any(line.startswith("model ") and "60 experts, top-4" in line for line in captured.out.splitlines())
    lines = _errors(captured.err)
    assert len(lines) == 1 and "would be downloaded" in lines[0]
