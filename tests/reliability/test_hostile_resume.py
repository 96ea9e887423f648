"""Resume against a changed run directory: stray files in checkpoints/, damaged or renamed
checkpoints, an empty or damaged config.yaml, a deleted or cut log.jsonl, --resume where no run
is, and a config that differs from the checkpointed one (refused, naming the keys)."""

from __future__ import annotations

import json
import shutil

import yaml

from reliability_helpers import changed, snapshot


def resume(hostile, run, *extra):
    return ["unlearn", hostile.stopped_config, *extra, "--out", run, "--resume", "--quiet"]


def log_steps(run):
    raw = (run / "log.jsonl").read_bytes()
    assert b"\0" not in raw
    return [json.loads(line)["step"] for line in raw.decode().splitlines()]


def test_stray_user_files_in_checkpoints_are_ignored_and_kept(hostile, copy_run, cli):
    """Accepted: only folders named exactly step-N are checkpoints; a user's backup copies beside
    them are neither read, nor deleted when newer checkpoints replace the old."""
    run = copy_run(hostile.stopped)
    ckpts = run / "checkpoints"
    shutil.copytree(ckpts / "step-000002", ckpts / "step-000002 copy")
    (ckpts / "step-000001.bak").write_text("my notes")
    (ckpts / "step-x").mkdir()
    before = snapshot(ckpts / "step-000002 copy", ckpts / "step-000001.bak", ckpts / "step-x")
    cli(resume(hostile, run), code=0, writes=[run])
    assert changed(before, snapshot(ckpts / "step-000002 copy", ckpts / "step-000001.bak", ckpts / "step-x")) == []
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001.bak", "step-000002 copy", "step-000003", "step-x"]
    assert log_steps(run) == [1, 2, 3]


def test_a_renamed_checkpoint_copy_is_refused(hostile, copy_run, cli):
    run = copy_run(hostile.stopped)
    shutil.copytree(run / "checkpoints" / "step-000002", run / "checkpoints" / "step-000099")
    cli(resume(hostile, run), phrase=r"checkpoint .*step-000099 has a damaged meta\.json or one from another step")


def test_a_damaged_meta_json_is_refused(hostile, copy_run, cli):
    run = copy_run(hostile.stopped)
    (run / "checkpoints" / "step-000002" / "meta.json").write_text("{\"step\": ")
    cli(resume(hostile, run), phrase=r"step-000002 has a damaged meta\.json .*delete step-000002")


def test_an_empty_config_yaml_is_restored_from_the_checkpoint(hostile, copy_run, cli):
    """Accepted: the checkpoint holds the run's config, so an emptied config.yaml is checked
    against that and written again."""
    run = copy_run(hostile.stopped)
    (run / "config.yaml").write_text("")
    cli(resume(hostile, run), code=0, writes=[run])
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 3


def test_an_empty_config_yaml_without_checkpoint_is_refused(hostile, copy_run, cli):
    run = copy_run(hostile.stopped)
    shutil.rmtree(run / "checkpoints")
    for text in ("", "- a list\n", "\udcff"):
        (run / "config.yaml").write_text(text, errors="surrogateescape")
        cli(resume(hostile, run), phrase=r"--resume: .*config\.yaml is empty or damaged, so the run's config is unknown")


def test_a_deleted_log_is_never_padded(hostile, copy_run, cli):
    """Accepted: the log is a record, the checkpoint holds the state; the resumed run logs from
    the checkpoint on (no NUL bytes where the deleted lines were)."""
    run = copy_run(hostile.stopped)
    (run / "log.jsonl").unlink()
    cli(resume(hostile, run), code=0, writes=[run])
    assert log_steps(run) == [3]


def test_a_cut_log_is_never_padded(hostile, copy_run, cli):
    run = copy_run(hostile.stopped)
    text = (run / "log.jsonl").read_text()
    (run / "log.jsonl").write_text(text.splitlines()[0] + "\n")
    cli(resume(hostile, run), code=0, writes=[run])
    assert log_steps(run) == [1, 3]


def test_resume_where_there_is_no_run(hostile, tmp_path, cli):
    cli(resume(hostile, tmp_path / "absent"), phrase=r"--resume: .*absent holds no run to continue; drop --resume")
    (tmp_path / "empty").mkdir()
    cli(resume(hostile, tmp_path / "empty"), phrase=r"--resume: .*empty holds no run to continue")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    cli(resume(hostile, tmp_path / "mine"), phrase=r"holds no run to continue \(no config\.yaml, no checkpoint\)")


def test_resume_with_a_config_but_no_checkpoint_starts_at_step_0_and_says_so(hostile, copy_run, cli, capsys):
    """Accepted: killed before its first checkpoint, the run restarts from step 0 (its config
    checked against config.yaml) and the summary line says so."""
    run = copy_run(hostile.stopped)
    shutil.rmtree(run / "checkpoints")
    capsys.readouterr()
    from moe_unlearn.cli.main import run as main

    assert main([str(a) for a in resume(hostile, run)]) == 0
    assert "3 steps (no checkpoint to resume: started at step 0)" in capsys.readouterr().out
    assert log_steps(run) == [1, 2, 3]


def test_a_different_config_is_refused_naming_the_keys(hostile, copy_run, cli):
    run = copy_run(hostile.stopped)
    cli(resume(hostile, run, "train.lr=0.002"),
        phrase=r"--resume needs the run's own config; these keys differ from .*meta\.json: train\.lr: 0\.001 -> 0\.002$")
    cli(resume(hostile, run, "train.lr=0.002", "seed=3", "eval.max_examples=2", "graddiff.alpha=2"),
        phrase=r"eval\.max_examples: 16 -> 2; graddiff\.alpha: 1\.0 -> 2\.0; seed: 0 -> 3 \(and 1 more\)$")


def test_the_checkpoint_wins_over_an_edited_config_yaml(hostile, copy_run, cli):
    """Editing config.yaml to match a new config does not make --resume continue the old state
    with new settings: the checkpoint records the config it was trained with."""
    run = copy_run(hostile.stopped)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["lr"] = 0.002
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    cli(resume(hostile, run, "train.lr=0.002"), phrase=r"differ from .*step-000002/meta\.json: train\.lr: 0\.001 -> 0\.002")
