"""`moe-unlearn report`: table, figures, self-contained HTML, demo results.json, errors."""

from __future__ import annotations

import json
import re

from moe_unlearn.cli.main import run
from moe_unlearn.report import load_runs
from moe_unlearn.report.render import table_rows

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(method: str, adapters: list[str], forget_mc: float, retain_stab: float) -> dict:
    per_layer = [retain_stab, retain_stab - 0.1]
    act = {"before": [[0.5, 0.5, 1.0], [1.0, 0.5, 0.5]], "after": [[0.25, 0.75, 1.0], [1.0, 1.0, 0.0]]}
    act["delta"] = [[a - b for a, b in zip(ra, rb)] for ra, rb in zip(act["after"], act["before"])]
    return {
        "method": method, "adapters": adapters, "steps": 20,
        "forget": {"nll": 4.5, "mc_acc": forget_mc, "token_acc": 0.2},
        "retain": {"nll": 0.1, "mc_acc": 0.95, "token_acc": 0.9},
        "holdout": {"nll": 5.0, "mc_acc": 0.3},
        "routing": {"stability": {"forget": 0.6, "retain": retain_stab, "holdout": 0.7},
                    "per_layer": {"forget": [0.6, 0.6], "retain": per_layer}, "activation": {"shift": 0.1, "forget": act}},
        "replay": {"value": 0.3, "without": {"token_acc": 0.2}, "with_replay": {"token_acc": 0.5}},
        "relearn": {"value": 0.8, "curve": [{"step": 0, "token_acc": 0.2}, {"step": 2, "token_acc": 0.8}]},
        "privacy": {"value": -12.5},
        "timing": {"total_seconds": 123.456},
    }


def _run_dir(root, name, metrics, with_log=True):
    d = root / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "config.yaml").write_text(f"method: {metrics['method']}\n")
    if with_log:
        rows = [{"step": s, "loss": -0.5 * s, "seconds": 0.1} for s in range(1, 6)] + [{"step": 5, "eval": {"forget": {"nll": 3.0}}}]
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')  # cut last line
    return d


def test_report_from_run_dirs(tmp_path, capsys):
    a = _run_dir(tmp_path, "a", _metrics("graddiff", [], 0.25, 0.7))
    b = _run_dir(tmp_path, "b", _metrics("graddiff", ["grip"], 0.5, 0.95))
    out = tmp_path / "report"
    assert run(["report", str(a), str(b), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert ("| graddiff | 20 | 4.500 | 0.250 | 0.200 | 0.100 | 0.950 | n/a | 0.600 | 0.700 | 0.700 | 0.300 | -12.500 "
            "| n/a | n/a | n/a | 123.5 |") in md
    assert "| graddiff+grip |" in md
    figures = {"forget_vs_utility", "stability_per_layer", "replay_recovery", "relearn", "training_curves", "activation_00", "activation_01"}
    for name in figures:
        assert (out / f"{name}.png").read_bytes()[:8] == PNG
        assert f"({name}.png)" in md
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(figures)
    assert not re.search(r"src='(?!data:)", page)  # self-contained: nothing loaded from elsewhere
    assert "graddiff+grip" in page and "7 figures" in capsys.readouterr().out
    runs = load_runs([a])
    assert [row["step"] for row in runs[0].log][-1] == 5  # the cut line was skipped


def test_demo_results_list_and_unique_names(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps([_metrics("ga", [], 0.3, 0.8), _metrics("ga", [], 0.4, 0.9), _metrics("npo", ["seuf"], 0.2, 0.6)]))
    runs = load_runs([results])
    assert [r.name for r in runs] == ["ga", "ga #2", "npo+seuf"]
    assert [row[0] for row in table_rows(runs)] == ["ga", "ga #2", "npo+seuf"]
    assert run(["report", str(results), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()


def test_demo_folder_reads_each_runs_log_like_the_demos_own_report(tmp_path):
    """`moe-unlearn report DEMO_OUT` finds each run's folder (runs/<label>, runs/seed-<s>/<label>)
    and draws the training curves and trade-offs from their logs; a label that is not a plain
    folder name is not followed."""
    demo = tmp_path / "demo_out"
    (demo / "runs" / "seed-4").mkdir(parents=True)
    entries = []
    for label, seed, parent in [("ga", 3, demo / "runs"), ("ga", 4, demo / "runs" / "seed-4"), ("../escape", 3, None)]:
        m = _metrics("ga", [], 0.3, 0.8) | {"run": label, "seed": seed}
        entries.append(m)
        if parent is not None:
            _run_dir(parent, label, m)
    _run_dir(demo, "escape", _metrics("npo", [], 0.3, 0.8))  # what "../escape" would reach from runs/
    (demo / "results.json").write_text(json.dumps(entries))
    runs = load_runs([demo])
    assert [len(r.log) for r in runs] == [6, 6, 0]
    assert [r.config for r in runs] == [{"method": "ga"}, {"method": "ga"}, None]
    assert run(["report", str(demo), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "training_curves.png").read_bytes()[:8] == PNG


def test_report_errors_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"hello": 1}))
    for path, message in [(tmp_path / "missing", "not found"), (tmp_path / "empty", "has no metrics.json"),
                          (bad, "not a readable JSON"), (other, "does not hold run metrics")]:
        assert run(["report", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_reference_rows_head_the_table_and_stay_out_of_the_run_figures(tmp_path):
    """The original model and the retrain oracle are listed first, whatever order they come in."""
    results = tmp_path / "demo" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps([_metrics("ga", [], 0.3, 0.8)]))
    for name, forget_mc in (("oracle", 0.25), ("original", 1.0)):
        ref = {**_metrics("x", [], forget_mc, 1.0), "reference": name, "method": None, "adapters": []}
        ref.update(forget_quality={"value": 1.0}, oracle_distance={"value": 0.0, "nll": 0.0})
        (results.parent / "reference" / name).mkdir(parents=True)
        (results.parent / "reference" / name / "metrics.json").write_text(json.dumps(ref))
    runs = load_runs([results])
    assert [(r.name, r.reference) for r in runs] == [("original model", "original"), ("retrain oracle", "oracle"), ("ga", None)]
    from moe_unlearn.report.render import COLUMNS

    cells = dict(zip(["run", *(h for h, _ in COLUMNS)], table_rows(runs)[1]))
    assert [cells[h] for h in ("forget quality ↑", "Δ oracle MC ↓", "Δ oracle NLL ↓", "seconds")] == [
        "1.000", "0.000", "0.000", "123.5"]
    out = tmp_path / "r"
    assert run(["report", str(results), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.index("| original model |") < md.index("| retrain oracle |") < md.index("| ga |")
    assert "1 run(s) and 2 reference row(s)" in md
    assert (out / "activation_00.png").is_file() and not (out / "activation_01.png").exists()  # the run's only


def test_training_loss_gets_one_panel_per_base_method(tmp_path):
    """RMU's loss (hundreds) no longer flattens the other methods' curves: each base method has
    its own panel and y-axis, adapters share their method's panel."""
    from moe_unlearn.report import plots

    dirs = [_run_dir(tmp_path, name, _metrics(method, adapters, 0.3, 0.9))
            for name, method, adapters in (("a", "rmu", []), ("b", "npo", []), ("c", "npo", ["grip"]))]
    (dirs[0] / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 300.0 - s}) + "\n" for s in range(1, 4)))
    runs = load_runs(dirs)
    panels = plots.loss_panels(runs)
    assert {m: [name for name, _ in curves] for m, curves in panels.items()} == {"rmu": ["rmu"], "npo": ["npo", "npo+grip"]}
    assert panels["rmu"][0][1] == [(1, 299.0), (2, 298.0), (3, 297.0)]
    path = plots.training_curves(runs, tmp_path / "curves.png")
    assert path.read_bytes().startswith(PNG)
