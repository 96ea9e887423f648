"""Mean ± sd over seeds (report.aggregate) and the trade-off curves (report.tradeoff)."""

from __future__ import annotations

import json
import statistics

import pytest

from moe_unlearn.cli.main import run
from moe_unlearn.report.aggregate import by_cell, format_spread, spread, spread_rows, summarise
from moe_unlearn.report.render import COLUMNS
from moe_unlearn.report.runs import Run
from moe_unlearn.report.tradeoff import eval_path, tradeoff_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _run(method, adapters, seed, forget_mc, retain_mc, *, lr=1e-3, evals=((0, 1.0, 1.0), (5, 0.6, 0.95))):
    metrics = {"method": method, "adapters": adapters, "steps": 10 + seed,
               "forget": {"mc_acc": forget_mc, "nll": 3.0}, "retain": {"mc_acc": retain_mc, "nll": 0.1},
               "routing": {"stability": {"retain": 0.9 + 0.01 * seed}}}
    log = [{"step": 1, "loss": 1.0}] + [{"step": s, "eval": {"forget": {"mc_acc": f}, "retain": {"mc_acc": r}}}
                                         for s, f, r in evals]
    config = {"method": method, "adapters": adapters, "seed": seed, "train": {"lr": lr}, "output_dir": f"/x/{seed}"}
    return Run(f"{method}-{seed}", metrics, config, log)


def test_spread_is_mean_and_sample_sd():
    s = spread([0.9, 0.95, 1.0, None, float("nan")])
    assert s.n == 3 and s.mean == pytest.approx(0.95) and s.sd == pytest.approx(0.05)  # sqrt(0.005 / 2)
    assert (s.low, s.high) == (0.9, 1.0)
    assert spread([0.3]).sd is None and spread([None]) is None
    assert format_spread(spread([0.25, 0.3, 0.35])) == "0.300 ± 0.050"
    assert format_spread(spread([35])) == "35" and format_spread(None) == "n/a"


def test_cells_group_seeds_of_one_config_only():
    runs = [_run("ga", [], 0, 0.3, 0.9), _run("ga", [], 1, 0.25, 0.8), _run("ga", ["grip"], 0, 0.3, 1.0),
            _run("ga", [], 2, 0.2, 0.7, lr=3e-4),  # another learning rate: another cell
            _run("ga", [], 0, 0.3, 0.9)]  # seed 0 again: not a second seed of the first cell
    cells = by_cell(runs)
    assert list(cells) == ["ga", "ga+grip", "ga [2]", "ga [3]"]
    assert [r.config["seed"] for r in cells["ga"]] == [0, 1]
    summary = summarise(runs)
    assert summary["ga"]["n"] == 2 and summary["ga"]["seeds"] == [0, 1]
    mc = summary["ga"]["retain.mc_acc"]
    assert mc["mean"] == pytest.approx(0.85) and mc["sd"] == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert summary["ga+grip"]["retain.mc_acc"]["sd"] is None
    rows = spread_rows(runs, COLUMNS)
    mc_col = [h for h, _ in COLUMNS].index("retain MC ↑") + 1
    assert rows[0][0] == "ga (n=2)" and rows[0][mc_col] == "0.850 ± 0.071"


def test_eval_path_reads_the_periodic_evals():
    r = _run("ga", [], 0, 0.3, 0.9, evals=((0, 1.0, 1.0), (10, 0.3, 0.9), (5, 0.6, 0.95)))
    r.log.append({"step": 7, "eval": {"forget": {"nll": 2.0}}})  # no MC: skipped
    assert eval_path(r) == [(0, 1.0, 1.0), (5, 0.6, 0.95), (10, 0.3, 0.9)]


def test_tradeoff_curves_one_figure_per_method(tmp_path):
    runs = [_run("ga", [], 0, 0.3, 0.9), _run("ga", ["grip"], 0, 0.3, 1.0), _run("ga", [], 1, 0.3, 0.9),
            _run("npo", [], 0, 0.3, 0.9), _run("rmu", [], 0, 0.3, 0.9, evals=((0, 1.0, 1.0),))]  # one point: no curve
    figures = tradeoff_curves(runs, tmp_path)
    assert [t for t, _ in figures] == ["Trade-off along the run: ga", "Trade-off along the run: npo"]
    assert all(p.read_bytes()[:8] == PNG for _, p in figures)


def _write_run(root, name, run_):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(run_.metrics))
    (d / "config.yaml").write_text(json.dumps(run_.config))  # JSON is YAML
    (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in run_.log))
    return d


def test_report_shows_mean_and_sd_when_cells_repeat(tmp_path):
    dirs = [_write_run(tmp_path, f"r{i}", r) for i, r in enumerate(
        [_run("ga", [], 0, 0.30, 0.90), _run("ga", [], 1, 0.20, 0.80), _run("ga", ["grip"], 0, 0.3, 1.0),
         _run("ga", ["grip"], 1, 0.3, 0.98)])]
    out = tmp_path / "report"
    assert run(["report", *map(str, dirs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Mean ± sd over the seeds" in md and "| ga (n=2) |" in md and "0.850 ± 0.071" in md
    assert "| ga+grip #2 |" in md  # every run is still listed
    assert "(tradeoff_00.png)" in md and (out / "tradeoff_00.png").read_bytes()[:8] == PNG
    assert "0.850 ± 0.071" in (out / "report.html").read_text()
