"""The trade-off figure's target band: the oracle's 95% interval, else the holdout proxy's."""

from moe_unlearn.report.runs import Run
from moe_unlearn.report.tradeoff import target_band, tradeoff_curves


def _run(name, **metrics):
    log = [{"step": 0, "eval": {"forget": {"mc_acc": 1.0}, "retain": {"mc_acc": 1.0}}},
           {"step": 5, "eval": {"forget": {"mc_acc": 0.3}, "retain": {"mc_acc": 0.9}}}]
    return Run(name, {"method": "ga", "adapters": [], **metrics}, None, log)


def test_band_is_the_oracle_interval_when_an_oracle_row_exists(tmp_path):
    oracle = _run("oracle", reference="oracle", forget={"mc_acc": 0.25, "mc_acc_ci": [0.2, 0.31]})
    run = _run("ga", forgotten={"reference": "oracle"}, holdout={"mc_acc_ci": [0.1, 0.4]})
    assert target_band([run, oracle]) == (0.2, 0.31, "retrain oracle (95%)")
    assert tradeoff_curves([oracle, run], tmp_path)[0][1].stat().st_size > 1000


def test_band_falls_back_to_the_holdout_proxy_and_to_none():
    run = _run("ga", forgotten={"reference": "holdout"}, holdout={"mc_acc_ci": [0.15, 0.35]})
    assert target_band([run]) == (0.15, 0.35, "holdout split (95%, no oracle)")
    assert target_band([_run("ga")]) is None
