"""Where commands write: no writer ever writes at, into, above or through a link to anything the
user gave (model dir, data files, config and its bases, benchmark or cache entry, runs), nor
below a regular file; every write is atomic (a killed or failed write leaves the old file or
nothing, never half of one); `report` survives damaged run files."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import yaml

import moe_unlearn.paths as paths_module

UNLEARN_OUT = "--out"


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "The quick brown fox."}\n')
    return path


# ---- inspect ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,phrase", [
    (lambda w, t, tmp: ["--out", t], r"--out .*texts\.jsonl is the input --data file"),
    (lambda w, t, tmp: ["--out", w.moe / "config.json"], r"--out .*config\.json is inside the input model dir"),
    (lambda w, t, tmp: ["--out", tmp / "s.json", "--plot", t], r"--plot .*texts\.jsonl is the input --data file"),
    (lambda w, t, tmp: ["--out", tmp / "s.json", "--plot", tmp / "s.json"], r"--plot .* and --out .* name the same file"),
    (lambda w, t, tmp: ["--out", t / "stats.json"], r"--out .*texts\.jsonl/stats\.json: .*texts\.jsonl is a file, not a dir"),
    (lambda w, t, tmp: ["--out", w.moe.parent / "llama"], r"--out .*llama is a directory; name a file"),
    (lambda w, t, tmp: ["--out", w.moe.parent], r"--out .* contains the input model dir"),
])
def test_inspect_never_writes_over_its_inputs(make, phrase, world, texts, tmp_path, cli):
    cli(["inspect", world.moe, "--data", texts, *make(world, texts, tmp_path), "--quiet"], phrase=phrase)


def test_inspect_out_through_a_symlink_to_the_data(world, texts, tmp_path, cli):
    link = tmp_path / "stats.json"
    link.symlink_to(texts)
    cli(["inspect", world.moe, "--data", texts, "--out", link, "--quiet"],
        phrase=r"--out .*stats\.json is the input --data file .*texts\.jsonl \(through a link\)")


def test_inspect_out_as_a_hard_link_to_the_data(world, texts, tmp_path, cli):
    link = tmp_path / "stats.json"
    os.link(texts, link)
    cli(["inspect", world.moe, "--data", texts, "--out", link, "--quiet"], phrase=r"is the input --data file")


def test_inspect_out_through_a_symlinked_folder_into_the_model(world, texts, tmp_path, cli):
    (tmp_path / "models").symlink_to(world.moe)
    cli(["inspect", world.moe, "--data", texts, "--out", tmp_path / "models" / "stats.json", "--quiet"],
        phrase=r"is inside the input model dir .* \(through a link\)")


# ---- eval -----------------------------------------------------------------------------------------
def _eval(world, *args):
    return ["eval", world.good, "--model", world.moe, *args, "--quiet"]


def test_eval_out_is_the_config(world, cli):
    cli(_eval(world, "--out", world.good), phrase=r"--out .*good\.yaml is the input config")


def test_eval_out_is_a_base_config(world, tmp_path, cli):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"eval": {"metrics": ["nll"], "max_examples": 4}}))
    top = tmp_path / "top.yaml"
    top.write_text(f"base: base.yaml\nmethod: ga\ndata: {{manifest: {world.manifest}}}\n")
    cli(["eval", top, "--model", world.moe, "--out", base, "--quiet"], phrase=r"base\.yaml is the input config")


def test_eval_out_is_the_retrained_metrics(world, hostile, copy_run, cli):
    run = copy_run(hostile.finished)
    cli(_eval(world, "--retrained", run / "metrics.json", "--out", run / "metrics.json"),
        phrase=r"is the input --retrained file")


def test_eval_out_inside_the_original_model(world, cli):
    cli(_eval(world, "--original", world.manifest.parent / "model", "--out", world.manifest.parent / "model" / "m.json"),
        phrase=r"is inside the input --original dir")


def test_eval_out_is_a_data_file_of_the_config(world, tmp_path, cli):
    data = tmp_path / "forget.jsonl"
    shutil.copy(world.root / "qa.jsonl", data)
    cfg = world.config("cfg-eval-data.yaml", {"method": "ga", "data": {"forget": {"path": str(data), "kind": "qa"}},
                                              "eval": {"metrics": ["nll"]}})
    cli(["eval", cfg, "--model", world.moe, "--out", data, "--quiet"], phrase=r"forget\.jsonl is the input data file")


def test_eval_out_inside_the_benchmark(world, cli):
    cli(["eval", world.manifest, "--model", world.moe, "--out", world.manifest.parent / "metrics.json", "--quiet"],
        phrase=r"is inside the input benchmark dir")


# ---- unlearn --------------------------------------------------------------------------------------
def test_unlearn_out_contains_the_config(world, tmp_path, cli):
    cfg = tmp_path / "mine" / "run.yaml"
    cfg.parent.mkdir()
    shutil.copy(world.good, cfg)
    cli(["unlearn", cfg, "--out", cfg.parent, "--overwrite", "--quiet"], phrase=r"contains the input config")


def test_unlearn_out_contains_a_data_file(world, tmp_path, cli):
    data = tmp_path / "d" / "forget.jsonl"
    data.parent.mkdir()
    shutil.copy(world.root / "qa.jsonl", data)
    cfg = world.config("cfg-out-data.yaml", {"method": "ga", "model": {"path": str(world.moe)},
                                             "data": {"forget": {"path": str(data), "kind": "qa"}},
                                             "train": {"max_steps": 1}})
    cli(["unlearn", cfg, "--out", data.parent, "--overwrite", "--quiet"], phrase=r"contains the input data file")


def test_unlearn_out_inside_the_benchmark(world, cli):
    cli(["unlearn", world.good, "--out", world.manifest.parent / "runs" / "x", "--quiet"],
        phrase=r"is inside the input benchmark dir")


def test_unlearn_out_is_a_symlink_to_the_model(world, tmp_path, cli):
    link = tmp_path / "run"
    link.symlink_to(world.manifest.parent / "model")
    cli(["unlearn", world.good, "--out", link, "--overwrite", "--quiet"],
        phrase=r"--out .*run is the input model dir .* \(through a link\)")


def test_unlearn_out_below_a_file(world, tmp_path, cli):
    (tmp_path / "notes.txt").write_text("mine")
    cli(["unlearn", world.good, "--out", tmp_path / "notes.txt" / "run", "--quiet"],
        phrase=r"notes\.txt is a file, not a directory")


@pytest.mark.parametrize("entry,target", [
    ("model", lambda w: w.manifest.parent / "model"),
    ("checkpoints", lambda w: w.manifest.parent),
    ("log.jsonl", lambda w: w.manifest.parent / "forget" / "qa.jsonl"),
    ("config.yaml", lambda w: w.good),
    ("metrics.json", lambda w: w.manifest),
])
@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_unlearn_never_writes_through_a_link_in_the_run_dir(entry, target, flag, world, hostile, copy_run, cli):
    """e.g. OUT/model a symlink to the input model: --resume would save over it, --overwrite
    delete it. Refused before anything is read or written."""
    run = copy_run(hostile.finished)
    path = run / entry
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.symlink_to(target(world))
    cli(["unlearn", world.good, "--out", run, flag, "--quiet"],
        phrase=rf"--out .*: .*{entry} (is|is inside|contains) the input .*: choose another --out$")


def test_resume_never_writes_a_run_file_through_a_link(world, hostile, copy_run, tmp_path, cli):
    """OUT/log.jsonl linked to a file that is no input: --resume refuses (it would append to it);
    --overwrite removes the link and leaves its target alone."""
    run = copy_run(hostile.finished)
    other = tmp_path / "notes.txt"
    other.write_text("the user's own notes\n")
    (run / "log.jsonl").unlink()
    (run / "log.jsonl").symlink_to(other)
    cli(["unlearn", world.good, "--out", run, "--resume", "--quiet"], phrase=r"log\.jsonl is a symlink; the run's own files")
    cli(["unlearn", world.good, "--out", run, "--overwrite", "--quiet"], code=0, writes=[run])
    assert not (run / "log.jsonl").is_symlink() and other.read_text() == "the user's own notes\n"


def test_checkpoints_may_live_elsewhere_through_a_link(world, hostile, copy_run, tmp_path, cli):
    """Accepted: OUT/checkpoints moved to another disk and linked back (no input there): --resume
    reads and writes through the link; --overwrite would only remove the link."""
    run = copy_run(hostile.finished)
    big = tmp_path / "scratch"
    shutil.move(run / "checkpoints", big)
    (run / "checkpoints").symlink_to(big)
    cli(["unlearn", world.good, "--out", run, "--resume", "--quiet"], code=0, writes=[run, big])
    assert (run / "checkpoints").is_symlink() and [p.name for p in big.iterdir()] == ["step-000002"]


def test_disk_full_while_saving_the_model(world, tmp_path, cli, monkeypatch):
    """ENOSPC in the middle of writing model.safetensors: exit 1, one line, no model/ and no
    half-written folder, checkpoint kept; --resume then finishes with a complete model/."""
    import transformers.modeling_utils as mu

    real = mu.safe_save_file

    def full(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    out = tmp_path / "run"
    monkeypatch.setattr(mu, "safe_save_file", full)
    cli(["unlearn", world.good, "--out", out, "--quiet"], code=1, writes=[out],
        phrase=r"could not save the model to .*model \(No space left on device\); nothing half-written was left; "
               r"checkpoint step-000002 is kept: free space and rerun with --resume")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl"]
    monkeypatch.setattr(mu, "safe_save_file", real)
    cli(["unlearn", world.good, "--out", out, "--resume", "--quiet"], code=0, writes=[out])
    assert (out / "model" / "model.safetensors").stat().st_size > 100_000 and (out / "metrics.json").is_file()


def test_disk_full_while_writing_a_checkpoint(world, tmp_path, cli, monkeypatch):
    import moe_unlearn.train.checkpoint as checkpoint

    calls = []
    real = checkpoint.torch.save

    def full_second_time(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_second_time)
    out = tmp_path / "run"
    cli(["unlearn", world.good, "--out", out, "--quiet"], code=1, writes=[out],
        phrase=r"could not write checkpoint step-000002 \(No space left on device\); checkpoint step-000001 is kept")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_a_failed_write_keeps_the_previous_output(command, world, texts, tmp_path, cli, monkeypatch):
    """Atomic: the rename that would publish the new file fails (disk full); the old --out file
    is intact and no temporary file is left next to it."""
    out = tmp_path / "result.json"
    out.write_text('{"old": true}')
    argv = (["eval", world.good, "--model", world.moe, "--out", out, "--quiet"] if command == "eval" else
            ["inspect", world.moe, "--data", texts, "--out", out, "--quiet"])

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paths_module.os, "replace", no_space)
    cli(argv, code=1, phrase=r"failed: No space left on device")
    assert json.loads(out.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["result.json", "texts.jsonl"])


# ---- report ---------------------------------------------------------------------------------------
def test_report_out_is_or_is_inside_a_run(hostile, copy_run, tmp_path, cli):
    run = copy_run(hostile.finished)
    cli(["report", run, "--out", run], phrase=r"--out .* is the input run")
    cli(["report", run, "--out", run / "report"], phrase=r"--out .*report is inside the input run")
    cli(["report", run, "--out", tmp_path], phrase=r"--out .* contains the input run")
    cli(["report", run / "metrics.json", "--out", run / "metrics.json"], phrase=r"is the input run")


def test_report_survives_damaged_run_files(hostile, copy_run, tmp_path, cli):
    """Accepted: an empty config.yaml, a non-UTF-8 log with NUL-padded and cut lines still give a
    report (the config is not read; log lines that do not parse are skipped)."""
    run = copy_run(hostile.finished)
    (run / "config.yaml").write_text("")
    log = (run / "log.jsonl").read_bytes()
    (run / "log.jsonl").write_bytes(b"\0" * 64 + b"\xff\xfe\n" + log + b'{"step": "two", "loss": 1}\n{"step": 3, "lo')
    out = tmp_path / "report"
    cli(["report", run, "--out", out], code=0, writes=[out])
    assert (out / "training_curves.png").is_file() and (out / "report.md").is_file()


ODD_METRICS = [
    ({"forget": 5}, r"'forget' must be a mapping, got int"),
    ({"forget": {"nll": "low"}}, r"'forget\.nll' must be a number, got \"low\""),
    ({"forget": {"nll": 1.0}, "adapters": "grip"}, r"'adapters' must be a list of names"),
    ({"forget": {"nll": 1.0}, "method": 5}, r"'method' must be a string"),
    ({"routing": {"per_layer": {"forget": "abc"}}}, r"'routing\.per_layer\.forget' must be a list of numbers"),
    ({"routing": {"activation": {"forget": {"before": [[0.1, 0.2], [0.3]], "after": [[0.1, 0.2], [0.3, 0.4]]}}}},
     r"'routing\.activation\.forget' must be \{before, after\}"),
    ({"forget": {"nll": 1.0}, "relearn": {"curve": [1, 2]}}, r"'relearn\.curve' must be a list of \{step, token_acc\}"),
    ({"retain": {"mc_acc": True}}, r"'retain\.mc_acc' must be a number, got true"),
    ({"replay": {"with_replay": []}, "forget": {}}, r"'replay\.with_replay' must be a mapping"),
    ([1, 2], r"does not hold run metrics"),
    ({"steps": 3}, r"does not hold run metrics"),
]


@pytest.mark.parametrize("metrics,phrase", ODD_METRICS, ids=[f"odd{i}" for i in range(len(ODD_METRICS))])
def test_report_refuses_odd_metrics_naming_the_key(metrics, phrase, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    cli(["report", run, "--out", tmp_path / "report"], phrase=phrase)


@pytest.mark.parametrize("text,phrase", [
    ("[" * 100_000, r"metrics\.json is not a readable JSON file \(RecursionError\)"),
    ('{"forget": {"nll": ' + "9" * 5000 + "}}", r"metrics\.json is not a readable JSON file \(ValueError\)"),
    (b"\xff\xfe{}", r"is not a readable JSON file \(UnicodeDecodeError\)"),
])
def test_report_refuses_unreadable_metrics(text, phrase, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    cli(["report", run, "--out", tmp_path / "report"], phrase=phrase)


def test_report_accepts_nan_and_missing_values(tmp_path, cli):
    """Accepted: NaN (how metrics.json writes an undefined number) and absent metrics print n/a."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"method": "ga", "forget": {"nll": NaN, "mc_acc": 0.5}, "retain": {}}')
    out = tmp_path / "report"
    cli(["report", run, "--out", out], code=0, writes=[out])
    assert "| ga |" in (out / "report.md").read_text()


# ---- benchmark build and demo ---------------------------------------------------------------------
def test_benchmark_build_into_the_current_directory(tmp_path, cli, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    cli(["benchmark", "build", "--out", ".", "--preset", "tiny"], phrase=r"--out \. is the current directory")


def test_benchmark_build_below_a_file(world, tmp_path, cli):
    (tmp_path / "f").write_text("x")
    cli(["benchmark", "build", "--out", tmp_path / "f" / "bench", "--preset", "tiny"], phrase=r"f is a file, not a dir")


def test_benchmark_build_inside_the_cache_entry(world, cli):
    cli(["benchmark", "build", "--out", world.manifest.parent / "copy", "--preset", "tiny"],
        phrase=r"is inside the input benchmark cache entry")


def test_benchmark_build_through_a_symlink_to_an_empty_dir(world, tmp_path, cli):
    """Accepted: the link keeps pointing at its directory, which now holds a complete benchmark."""
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "bench"
    link.symlink_to(target)
    cli(["benchmark", "build", "--out", link, "--preset", "tiny"], code=0, writes=[target])
    assert link.is_symlink() and (target / "manifest.json").is_file() and (target / "model").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("inside", [False, True])
def test_demo_out_at_or_inside_the_benchmark_cache_entry(inside, world, cli):
    out = world.manifest.parent / "demo" if inside else world.manifest.parent
    cli(["demo", "--out", out, "preset=tiny"], phrase=r"(is|is inside) the input benchmark cache entry")


def test_leftovers_of_a_killed_save_are_cleared_on_resume(world, hostile, copy_run, cli):
    """kill -9 during the final save leaves `.model.tmp-*` (half written) and maybe `.model.old-*`
    beside OUT/model: never read as a model, and removed by the next --resume or --overwrite."""
    run = copy_run(hostile.finished)
    (run / ".model.tmp-123-abcdef01").mkdir()
    (run / ".model.tmp-123-abcdef01" / "model.safetensors").write_bytes(b"\0" * 100)
    shutil.copytree(run / "model", run / ".model.old-123-abcdef02")
    (run / ".metrics.json.tmp-123-abcdef03.json").write_text("{")
    cli(["unlearn", world.good, "--out", run, "--resume", "--quiet"], code=0, writes=[run])
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "log.jsonl", "metrics.json", "model"]


def test_atomic_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_text("old")
    with pytest.raises(OSError):
        with paths_module.atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (final / "weights").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with paths_module.atomic_dir(final) as tmp:
        (tmp / "weights").write_text("new")
    assert (final / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_first_nonfinite_checks_every_chunk():
    import torch

    from moe_unlearn.models import first_nonfinite

    x = torch.ones(10)
    x[9] = float("nan")
    named = [("ints", torch.tensor([1, 2])), ("fine", torch.ones(7, dtype=torch.bfloat16)), ("bad", x)]
    assert first_nonfinite(named, chunk=3) == "bad"
    assert first_nonfinite(named[:2], chunk=3) is None
