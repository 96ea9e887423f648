"""The GPU full-depth bench at CPU width: its plain loop computes the engine's loss on the same
text batches, and a plain loop that ran out of memory leaves only the engine's own figure."""

from __future__ import annotations

import pytest
import torch

from bench.plain_loop import PlainLoop
from bench.full_depth_gpu import engine_for, figures_of


@pytest.mark.parametrize("method", ["graddiff", "npo"])
def test_plain_loop_loss_equals_the_engines_on_the_recipes_text_rows(tmp_path, method):
    trainer, _, remake = engine_for(method, "cpu", tmp_path)
    plain = PlainLoop(remake(), method, trainer.pairs, trainer.cfg, trainer.method.cfg)
    forget, retain = trainer.pairs.batch(0)
    assert forget["input_ids"].shape == retain["input_ids"].shape == (2, 64)  # rehearsal's CPU rows, chunked text
    ours, _ = trainer.micro_step(forget, retain)
    with torch.no_grad():
        assert float(plain.loss(forget, retain)) == pytest.approx(float(ours), rel=1e-4)


def test_an_out_of_memory_plain_loop_keeps_the_engines_figure_only():
    r = {"engine": {"step_s": 0.5, "peak": 2**30, "start": 2**29}, "plain": {"error": "out of memory: ..."}, "active": 10**9,
         "tokens": 4096.0, "geometry": {}}
    (fig,) = figures_of("npo", 0.9, r, "")
    assert fig.unit == "TFLOP/s" and fig.measured == pytest.approx(6 * 10**9 * 4096 / 0.5 / 1e12, rel=1e-3)
    assert fig.detail["plain"].startswith("out of memory")
    r["plain"] = {"step_s": 1.0, "peak": 2**31, "start": 2**29}
    names = [f.name for f in figures_of("npo", 0.9, r, "")]
    assert len(names) == 4 and any("tokens/s" in n for n in names)
    assert {f.measured for f in figures_of("npo", 0.9, r, "")[1:]} == {0.5, 2.0}


def test_gpu_check_runs_the_group_alone_and_tables_its_figures(tmp_path):
    import json

    from bench import gpu_check

    check = gpu_check.full_depth(tmp_path)
    assert check.cmd[-4:] == ["--only", "full_depth_gpu", "--out", str(tmp_path / "full_depth.json")]
    r = {"engine": {"step_s": 0.3, "peak": 3 * 2**30, "start": 2**30}, "plain": {"step_s": 0.35, "peak": 4 * 2**30,
         "start": 2**30}, "active": 10**9, "tokens": 4096.0, "geometry": {}}
    figs = figures_of("graddiff", 0.9, r, ", x")
    (tmp_path / "full_depth.json").write_text(json.dumps({"figures": [f.row() for f in figs]}))
    check.code = 0
    rows = gpu_check.bench_rows(check, tmp_path)
    assert [name for name, _, _ in rows] == [f"bench: {f.name}" for f in figs]
    assert rows[1][2] == "<= 0.9: pass" and rows[-1][2] == ">= 1.3: FAIL"  # step 0.857 of the plain loop's


def test_the_group_alone_builds_no_embedded_benchmark(tmp_path, monkeypatch):
    """gpu_check runs it in a fresh cache: it must not spend its minutes building the demo's benchmark."""
    from bench.run import run_bench

    monkeypatch.setenv("MOE_UNLEARN_CACHE", str(tmp_path / "cache"))
    result = run_bench("smoke", only=["full_depth_gpu"], out=tmp_path / "out.json")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert {f["detail"]["group"] for f in result["figures"]} == {"full_depth_gpu"}
    assert any(f["figure"].startswith("graddiff engine step / plain loop step") for f in result["figures"])
