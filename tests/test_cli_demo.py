"""The demo end to end on the tiny benchmark: results.json contract, skipped runs, the report."""

import json
import os

import pytest

from moe_unlearn.cli.main import run

def _one_line_aligned_rows(printed: str, labels: set[str]) -> list[str]:
    """The summary rows of these runs, each checked to be one line whose second column starts
    where the header's does (the header itself one line: it ends with its last column)."""
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("run ") and line.rstrip().endswith("gap MC 95%"))
    start = header.index("steps")
    rows = [line for line in lines if line.split("  ")[0] in labels]
    for line in rows:
        assert line[:start].rstrip() in labels and line[start] != " ", line
        assert line.rstrip().endswith(("]", "≈")), line  # the gap's interval, the last column, on the same line
    return rows


SMALL = ["preset=tiny", "common.train.max_steps=2", "common.train.eval_every=0", "common.train.early_stop={}",
         "common.eval.max_examples=8", "quick.methods=[ga, graddiff]", "quick.adapters=[[], [trace]]"]


def test_demo_writes_results_report_and_lists_skipped_runs(tiny_benchmark, tmp_path, capfd):
    out = tmp_path / "demo"
    assert run(["demo", "--quick", "--oracle", "--jobs", "2", "--out", str(out), *SMALL]) == 0

    results = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["adapters"]) for r in results] == [("ga", []), ("graddiff", []), ("graddiff", ["trace"])]
    for r in results:
        assert r["steps"] == 2
        assert {"forget", "retain", "holdout", "routing", "timing"} <= set(r)
        assert 0.0 <= r["routing"]["stability"]["retain"] <= 1.0
        assert json.loads((out / "runs" / r["run"] / "metrics.json").read_text())["forget"] == r["forget"]

    # the reference rows: every run is evaluated against the retrain oracle
    refs = {name: json.loads((out / "reference" / name / "metrics.json").read_text()) for name in ("original", "oracle")}
    assert refs["original"]["routing"]["stability"]["retain"] == 1.0 and refs["oracle"]["privacy"]["value"] == 0.0
    for r in results:
        assert r["privacy"]["retrained_auc"] == refs["oracle"]["privacy"]["auc"]
        assert r["oracle_distance"]["value"] is not None and r["forget_quality"]["n_retrained"] == 8
    md = (out / "report" / "report.md").read_text()
    assert md.index("| original model |") < md.index("| retrain oracle |") < md.index("| ga |")

    demo = json.loads((out / "demo.json").read_text())
    assert demo["oracle"] is True and demo["oracle_build_seconds"] >= 0
    assert [s["run"] for s in demo["skipped"]] == ["ga+trace"]
    assert "no retain term" in demo["skipped"][0]["reason"]
    assert (out / "report" / "report.html").stat().st_size > 10_000
    printed, err = capfd.readouterr()  # the worker processes' output too
    assert "graddiff+trace" in printed and "skipped" in printed
    # one summary row per run is the progress: no bars from the workers' model loads and saves,
    # and no accelerator probe's warning on a machine without one
    assert "Loading weights" not in err and "Writing model shards" not in err
    if "DS_ACCELERATOR" not in os.environ or os.environ["DS_ACCELERATOR"] == "cpu":
        assert "Setting accelerator to CPU" not in printed + err
    assert printed.index("original model") < printed.index("retrain oracle") < printed.index("graddiff+trace")
    assert len(_one_line_aligned_rows(printed, {"original model", "retrain oracle", "ga", "graddiff", "graddiff+trace"})) == 5


def test_demo_refuses_a_foreign_non_empty_out_dir(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run(["demo", "--out", str(out), "preset=tiny"]) == 2
    assert "holds no demo results" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_demo_seeds_give_mean_and_spread_per_cell(tiny_benchmark, tmp_path, capsys):
    out = tmp_path / "demo"
    small = [o for o in SMALL if not o.startswith("quick.adapters")] + ["quick.methods=[graddiff]",
                                                                        "quick.adapters=[[], [keep_routing]]",
                                                                        "common.train.eval_every=1"]
    assert run(["demo", "--quick", "--seeds", "2", "--out", str(out), *small]) == 0

    results = json.loads((out / "results.json").read_text())
    assert [(r["run"], r["seed"]) for r in results] == [("graddiff", 0), ("graddiff+keep_routing", 0),
                                                       ("graddiff", 1), ("graddiff+keep_routing", 1)]
    assert (out / "runs" / "graddiff" / "metrics.json").is_file()  # the first seed keeps the one-seed layout
    assert (out / "runs" / "seed-1" / "graddiff+keep_routing" / "metrics.json").is_file()
    assert results[0]["forget"] != results[2]["forget"]  # another seed draws other batches
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    cell = summary["cells"]["graddiff+keep_routing"]
    values = [r["retain"]["nll"] for r in results if r["run"] == "graddiff+keep_routing"]
    assert cell["n"] == 2 and cell["retain.nll"]["mean"] == pytest.approx(sum(values) / 2)
    assert cell["retain.nll"]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    md = (out / "report" / "report.md").read_text()
    assert "| graddiff+keep_routing (n=2) |" in md and " ± " in md
    assert "(tradeoff_00.png)" in md  # eval_every=1: every run has a curve
    printed = capsys.readouterr().out
    assert "mean ± sd over seeds 0..1" in printed
    # a label longer than the usual column (21 characters) widens it instead of shifting its row
    assert len(_one_line_aligned_rows(printed, {"graddiff", "graddiff+keep_routing"})) == 4
    demo = json.loads((out / "demo.json").read_text())
    assert demo["seeds"] == [0, 1]


def test_adapter_lr_scale_is_a_number_or_per_method(tmp_path):
    from moe_unlearn.recipes.demo import DemoRun, load_spec, run_config

    spec = load_spec(["adapter_lr_scale={seuf: 10, keep_routing: {ga: 3}}", "methods.ga.train.lr=1e-4",
                      "methods.graddiff.train.lr=1e-3"])
    lr = lambda method, *adapters: run_config(spec, DemoRun(method, adapters), tmp_path, 0)["train"]["lr"]  # noqa: E731
    assert lr("ga") == pytest.approx(1e-4)
    assert lr("ga", "keep_routing") == pytest.approx(3e-4)
    assert lr("graddiff", "keep_routing") == pytest.approx(1e-3)  # not named: unscaled
    assert lr("ga", "seuf", "keep_routing") == pytest.approx(3e-3)  # factors multiply


def test_parallel_jobs_compute_what_a_serial_run_computes(tiny_benchmark, tmp_path):
    """Two 1-thread worker processes give the numbers of one 1-thread serial run, in plan order."""
    import torch

    from moe_unlearn.recipes.demo import run_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial run's thread count; cpu_threads() // 2 jobs gives each worker 1 too
    small = [o for o in SMALL if not o.startswith("quick.")] + ["quick.methods=[ga, graddiff]",
                                                                "quick.adapters=[[], [grip]]"]
    try:
        serial = run_demo(tmp_path / "serial", quick=True, overrides=small, progress=False, jobs=1)
        parallel = run_demo(tmp_path / "parallel", quick=True, overrides=small, progress=False, jobs=2)
    finally:
        torch.set_num_threads(threads)
    assert [r["run"] for r in parallel] == [r["run"] for r in serial] == ["ga", "ga+grip", "graddiff", "graddiff+grip"]
    for a, b in zip(serial, parallel):
        for key in ("forget", "retain", "holdout", "routing", "steps"):
            assert a[key] == b[key], (a["run"], key)
    demo = json.loads((tmp_path / "parallel" / "demo.json").read_text())
    assert (demo["jobs"], demo["threads_per_job"]) == (2, 1)
