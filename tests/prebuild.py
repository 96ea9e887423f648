"""Build the suite's cached benchmark (and its retrain oracle) before pytest starts.

scripts/test.sh runs this for both kernel sets side by side, one torch thread each, so that no
pytest worker idles while the other builds. It goes through tests/conftest.py, so the cache is
the one the tests read (same folder, kernels and thread count) and its bits are the ones a test
would have built.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import conftest  # noqa: E402,F401  (the tests' cache folder and thread count)
from moe_unlearn.benchmark import cached_benchmark  # noqa: E402
from moe_unlearn.benchmark.oracle import cached_oracle  # noqa: E402

if __name__ == "__main__":
    manifest = cached_benchmark("tiny", seed=0)
    if "--oracle" in sys.argv[1:]:
        cached_oracle(manifest)
