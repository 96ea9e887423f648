"""Run under `torchrun --nproc_per_node 2`: the DDP cases of test_ddp.py (per-process batch 4).

argv: manifest, output root. Writes <root>/<case>/ per case and <root>/resumed-<case>/ for the
first case: interrupted inside step 3 on every process, then resumed (jobs.run_cases).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES  # noqa: E402
from jobs import run_cases  # noqa: E402

run_cases(Path(sys.argv[1]), Path(sys.argv[2]), CASES, [next(iter(CASES))])
