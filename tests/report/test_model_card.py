"""Every saved model/ gets a Hugging Face model card; --push-to-hub fails cleanly offline."""

from __future__ import annotations

import json

import pytest
import yaml
from benchmark_recipes import RECIPES_DIR, without_pending

from moe_unlearn import __version__
from moe_unlearn.cli.main import run
from moe_unlearn.config import resolve_yaml
from moe_unlearn.data import UnlearnData
from moe_unlearn.errors import RunFailure
from moe_unlearn.report import model_card
from moe_unlearn.train.config import build_config


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_unlearn_writes_a_card_and_push_fails_cleanly_offline(tmp_path, tiny_benchmark, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "method": "graddiff", "adapters": ["grip"],
        "data": {"manifest": str(tiny_benchmark), "batch_size": 4, "retain_batch_size": 4},
        "train": {"lr": 1e-3, "max_steps": 2, "checkpoint_every": 0},
        "eval": {"metrics": ["nll", "mc_acc", "stability", "replay"], "max_examples": 8},
    }))
    out = tmp_path / "out"
    code = run(["unlearn", str(cfg), "--out", str(out), "--quiet", "--push-to-hub", "me/tiny-unlearned"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "cannot push to the Hub" in err and f"results stay in {out}" in err
    assert (out / "metrics.json").is_file() and (out / "model" / "model.safetensors").is_file()  # results kept
    card = (out / "model" / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and "base_model" not in meta  # a local base model
    assert {"moe-unlearn", "mixture-of-experts", "unlearning-graddiff", "unlearning-grip"} <= set(meta["tags"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"moe-unlearn](https://pypi.org/project/moe-unlearn/) {__version__}" in card
    assert f"| routing stability on retain ↑ | {metrics['routing']['stability']['retain']:.4g} |" in card
    assert "grip:" in card and "rel_energy" in card  # adapter settings
    sizes = UnlearnData.from_manifest(tiny_benchmark).sizes()["forget"]
    assert "| forget | " + " | ".join(str(sizes.get(k, "")) for k in ("text", "qa", "mc", "completion")) + " |" in card


def test_bad_repo_id_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "never"
    assert run(["unlearn", str(RECIPES_DIR / "wmdp_cyber.yaml"), "--out", str(out), "--push-to-hub", "not a repo"]) == 2
    assert "not a hub repository id" in capsys.readouterr().err and not out.exists()


def test_benchmark_card_names_hub_model_data_and_paper_columns():
    cfg = build_config(without_pending(resolve_yaml(RECIPES_DIR / "wmdp_cyber.yaml"))[0])
    metrics = {"steps": 125, "lm_eval": {"tasks": {"wmdp_bio": {"acc,none": 0.31}, "wmdp_cyber": {"acc,none": 0.27},
                                                   "mmlu": {"acc,none": 0.55}}},
               "routing": {"stability": {"retain": 0.93}}, "replay": {"value": 0.02}}
    card = model_card.render_card(cfg, metrics, {"train forget": {"text": 1000}, "forget": {"mc": 200, "qa": 200}},
                                  cfg.model.path)
    meta = front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen1.5-MoE-A2.7B-Chat" and "wmdp" in meta["tags"]
    assert meta["datasets"] == ["cais/mmlu", "cais/wmdp", "cais/wmdp-corpora"]
    assert "| WMDP-Bio acc ↓ | WMDP-Cyber acc ↓ | MMLU acc ↑ |" in card and "| 0.31 | 0.27 | 0.55 |" in card
    assert "| utility (utility MC, else TOFU model utility, else MMLU) ↑ | 0.55 |" in card
    assert "| train forget | 1000 |  |  |  |" in card


def test_push_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub

    def refuse(self, *a, **k):
        raise OSError("401 Client Error:\nInvalid credentials")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    (tmp_path / "model").mkdir()
    with pytest.raises(RunFailure, match=r"cannot push to the Hub \(401 Client Error: Invalid credentials\); the results stay in") as e:
        model_card.push_to_hub(tmp_path / "model", "me/x")
    assert "\n" not in str(e.value)


def test_a_card_people_can_publish(tmp_path):
    """Hub metadata (license inherited from a local base model's card, tags with unlearning, a
    model-index of the headline numbers), how to load, intended use, citations, no machine path;
    huggingface_hub reads it; a TOFU run shows its model utility."""
    from huggingface_hub import ModelCard

    base = tmp_path / "secret-dir" / "my-tofu-finetune"
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    cfg = build_config(without_pending(resolve_yaml(RECIPES_DIR / "tofu_forget10.yaml"))[0])
    cfg.model.path, cfg.model.base_model = str(base), "allenai/OLMoE-1B-7B-0125-Instruct"
    cfg.data.forget.path = str(tmp_path / "secret-dir" / "forget10.jsonl")
    metrics = {"steps": 10, "forget": {"token_acc": 0.2}, "retain": {"token_acc": 0.8},
               "tofu_model_utility": {"value": 0.61}, "routing": {"stability": {"retain": 0.97}}, "replay": {"value": 0.01}}
    card = model_card.render_card(cfg, metrics, {"forget": {"qa": 400}}, str(base))
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "allenai/OLMoE-1B-7B-0125-Instruct"
    assert "unlearning" in meta["tags"] and "unlearning-graddiff" in meta["tags"]
    values = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["utility"] == 0.61 and values["routing_stability_on_retain"] == 0.97
    assert "| utility (utility MC, else TOFU model utility, else MMLU) ↑ | 0.61 |" in card
    for section in ("## How to load", "## Intended use", "## What was forgotten", "## How forgetting was measured",
                    "## Limitations", "## Citations"):
        assert section in card
    assert "arXiv 2401.06121" in card  # the benchmark's paper
    assert str(tmp_path) not in card and "secret-dir" not in card  # no machine path anywhere
    parsed = ModelCard(card)
    assert parsed.data.license == "apache-2.0" and parsed.data.eval_results  # model-index parsed by the Hub's reader


def test_a_card_says_when_evaluation_failed_and_then_claims_no_numbers(tmp_path):
    cfg = build_config(without_pending(resolve_yaml(RECIPES_DIR / "wmdp_cyber.yaml"))[0])
    card = model_card.render_card(cfg, {"steps": 3}, {}, cfg.model.path, failure="out of memory")
    assert "Evaluation did not finish (out of memory)" in card and "model-index" not in front_matter(card)
    assert "## How forgetting was measured" not in card and front_matter(card)["license"] == "other"


def _tiny_run(tmp_path, tiny_benchmark):
    return build_config({"method": "ga", "data": {"manifest": str(tiny_benchmark), "batch_size": 4},
                         "train": {"lr": 1e-3, "max_steps": 1, "checkpoint_every": 0},
                         "eval": {"metrics": ["nll", "mc_acc"], "max_examples": 8}})


def test_the_card_is_written_inside_the_atomic_publish_of_model(tmp_path, tiny_benchmark, monkeypatch):
    import moe_unlearn.train.engine as engine
    from moe_unlearn.train import run_unlearning

    folders = []
    real = engine.write_model_card
    monkeypatch.setattr(engine, "write_model_card", lambda folder, *a, **k: folders.append(folder) or real(folder, *a, **k))
    run_unlearning(_tiny_run(tmp_path, tiny_benchmark), out_dir=tmp_path / "run", progress=False)
    assert len(folders) == 1 and folders[0].name.startswith(".model.tmp-")  # before model/ was renamed into place
    assert (tmp_path / "run" / "model" / "README.md").is_file()


def test_a_failed_evaluation_keeps_the_model_with_a_card_that_says_so(tmp_path, tiny_benchmark, monkeypatch):
    import moe_unlearn.eval as ev
    from moe_unlearn.train import run_unlearning

    def fail(*a, **k):
        raise RunFailure("out of memory while evaluating; lower eval.batch_size")

    monkeypatch.setattr(ev, "evaluate_model", fail)  # the engine imports it when the run ends
    with pytest.raises(RunFailure, match="out of memory while evaluating"):
        run_unlearning(_tiny_run(tmp_path, tiny_benchmark), out_dir=tmp_path / "run", progress=False)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "Evaluation did not finish (RunFailure: out of memory while evaluating)" in card
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists() and "model-index" not in front_matter(card)
