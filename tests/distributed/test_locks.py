"""The output dir's lock belongs to the run: under 2 processes a rank never refuses its own run,
whatever order the ranks reach the dir in, and a foreign live process is still refused on every
rank with the one line (lock_job.py forces the order that once failed)."""

from __future__ import annotations

import json

import pytest

from launch import two_process_job

two = two_process_job("lock_job.py")


def _seen(root, r):
    return json.loads((root / f"rank-{r}.json").read_text())


def test_a_rank_held_back_until_its_run_claimed_the_dir_resumes_with_it(two):
    for r in (0, 1):
        assert _seen(two, r)["resumed"] is True
    assert (two / "resumed" / "metrics.json").is_file()
    assert not (two / "resumed" / ".moe-unlearn.lock").exists()  # released when the run ended


def test_a_foreign_live_holder_is_refused_on_every_rank_with_one_line(two):
    for r in (0, 1):
        seen = _seen(two, r)
        error = seen["foreign_error"]
        assert error is not None, "a run went into a dir another live process holds"
        assert f"is in use by another moe-unlearn process (pid {seen['foreign_pid']})" in error
        assert "\n" not in error
    assert not (two / "foreign" / "model").exists()


def test_a_benchmark_build_is_refused_inside_a_started_process_group(tmp_path, monkeypatch):
    """A build runs no collective: inside a process group the other processes would wait for it
    forever, so it is refused with how to build first (the engine resolves data before starting one)."""
    from moe_unlearn.benchmark import cache
    from moe_unlearn.errors import UserError

    monkeypatch.setenv("MOE_UNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "world_size", lambda: 2)
    with pytest.raises(UserError, match="not in the cache and 2 processes run: build it once first"):
        cache.cached_benchmark("tiny", seed=12345)
    assert not any((tmp_path / "cache").glob("tiny-*"))
