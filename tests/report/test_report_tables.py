"""The report shows a benchmark's paper columns for runs of that benchmark; the default table stays otherwise."""

from __future__ import annotations

import json

from moe_unlearn.cli.main import run
from moe_unlearn.report import load_runs
from moe_unlearn.report.render import COLUMNS, columns_for, table_rows
from moe_unlearn.report.tables import TABLES


def _run(root, name, metrics, benchmark=None):
    d = root / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"method": "npo", "adapters": [], "steps": 5, "forget": {}, **metrics}))
    (d / "config.yaml").write_text("method: npo\n" + (f"benchmark: {benchmark}\n" if benchmark else ""))
    return d


def test_every_config_benchmark_has_a_table():
    import typing

    from moe_unlearn.train.config import UnlearnConfig

    hint = typing.get_type_hints(UnlearnConfig)["benchmark"]
    names = {a for arg in typing.get_args(hint) for a in typing.get_args(arg)}
    assert names == set(TABLES.names()) == {"wmdp", "muse", "tofu", "rwku"}


def test_wmdp_runs_get_the_wmdp_columns(tmp_path):
    tasks = {"wmdp_bio": {"acc,none": 0.26}, "wmdp_cyber": {"acc,none": 0.3}, "mmlu": {"acc,none": 0.51}}
    a = _run(tmp_path, "a", {"lm_eval": {"value": 0.3, "tasks": tasks}, "routing": {"stability": {"retain": 0.9}}}, "wmdp")
    out = tmp_path / "rep"
    assert run(["report", str(a), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| run | steps | WMDP-Bio acc ↓ | WMDP-Cyber acc ↓ | MMLU acc ↑ | stab F | stab R ↑ |" in md
    assert "| npo | 5 | 0.260 | 0.300 | 0.510 | n/a | 0.900 |" in md
    assert "WMDP (as SEUF reports it)" in md and "WMDP-Cyber acc" in (out / "report.html").read_text()


def test_muse_rwku_values_are_scaled_as_the_papers_print_them(tmp_path):
    muse = _run(tmp_path, "m", {"forget": {"rouge_text": 0.421, "rouge_qa": 0.3}, "retain": {"rouge_qa": 0.55},
                                "privacy": {"value": -99.8}}, "muse")
    assert table_rows(load_runs([muse]))[0][2:6] == ["42.100", "30.000", "55.000", "-99.800"]
    rwku = _run(tmp_path, "r", {"forget": {"rwku_rouge_FB": 0.5, "rwku_rouge_QA": 0.25, "rwku_rouge_AA": 0.1, "text_nll": 2.5},
                                "retain": {"rwku_rouge_FB": 0.8, "text_nll": 1.5}, "utility_mc": {"value": 0.6}}, "rwku")
    assert table_rows(load_runs([rwku]))[0][2:10] == ["50.000", "25.000", "10.000", "80.000", "n/a", "2.500", "1.500", "60.000"]


def test_muse_privleak_column_is_the_muse_value():
    column = dict(TABLES.get("muse").columns)["PrivLeak (→0)"]
    assert column({"privacy": {"privleak": {"mink": -12.0}, "value": -12.0, "member_privleak": {"mink": 9.0}}}) == -12.0


def test_default_table_for_embedded_and_mixed_runs(tmp_path):
    plain = _run(tmp_path, "p", {})
    wmdp = _run(tmp_path, "w", {}, "wmdp")
    assert columns_for(load_runs([plain]))[0] is COLUMNS
    assert columns_for(load_runs([plain, wmdp]))[0] is COLUMNS
    tofu = _run(tmp_path, "t", {"benchmark": "tofu"})  # metrics.json alone also names it
    (tofu / "config.yaml").unlink()
    assert columns_for(load_runs([tofu]))[0] is TABLES.get("tofu").columns


def test_interval_and_oracle_gap_columns_mark_differences_inside_the_noise():
    from moe_unlearn.report.render import COLUMNS, row

    m = {"forget": {"mc_acc": 0.27, "mc_acc_ci": [0.22, 0.33]},
         "forgotten": {"value": 1.0, "reference": "oracle",
                       "mc_acc": {"gap": 0.01, "gap_ci": [-0.03, 0.05], "inside_noise": True},
                       "nll": {"gap": -0.5, "gap_ci": [-0.9, -0.1], "inside_noise": False}}}
    cells = dict(zip(["run", *(h for h, _ in COLUMNS)], row("ga", m)))
    assert cells["forget MC 95%"] == "[0.220, 0.330]" and cells["retain MC 95%"] == "n/a"
    assert cells["forgotten ↑"] == "1.000" and cells["vs"] == "oracle"
    assert cells["gap MC 95%"] == "[-0.030, 0.050] ≈" and cells["gap NLL"] == "-0.500"
    m["forgotten"]["mc_acc"]["inside_noise"] = False
    assert not dict(zip(["run", *(h for h, _ in COLUMNS)], row("ga", m)))["gap MC 95%"].endswith("≈")
