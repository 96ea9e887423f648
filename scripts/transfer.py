"""Does forgetting transfer? The demo's budget on benchmark seeds never used in development.

    python scripts/transfer.py --out transfer_out SEED [SEED ...] [-- demo overrides]

Runs `moe-unlearn demo --seed S` (retrain oracle built) for every seed into OUT/seed-S (a seed
whose results.json is complete is reused), then prints the transfer table: per cell the mean
+- sd over seeds and how many seeds reach each target:
- forgotten: forget MC and NLL inside the oracle's 95% interval (eval/forgotten.py);
- retain kept: retain MC >= 0.9 x the original model's;
- both: forgotten and retain kept in the same run (the budget rule's target);
- stability: retained routing stability >= 0.95 (keep_routing's target);
- guard restored: runs the retain guard (train.early_stop.retain_kept) sent back to an earlier eval;
and the adapters vs their base method at matched forgetting (both forgotten): wins / losses
on retain MC beyond the noise (the 95% interval of the paired difference), and ties inside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

MAIN = "matrix.adapters=[[], [keep_routing], [grip], [seuf], [trace]]"
RETAIN_KEPT, STABLE = 0.9, 0.95


def run_seed(out: Path, seed: int, overrides: list[str]) -> list[dict[str, Any]]:
    from moe_unlearn.recipes.demo import run_demo

    done = out / "results.json"
    if done.is_file() and (out / "demo.json").is_file():
        return json.loads(done.read_text())
    return run_demo(out, seed=seed, oracle=True, overrides=[MAIN, *overrides], progress=False)


def _ms(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.replace('+', '').format(sd)}"  # a spread has no sign


def table(per_seed: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    cells: dict[str, list[dict[str, Any]]] = {}
    for original, results in per_seed.values():
        for r in results:
            cells.setdefault(r["run"], []).append({**r, "_original": original})
    n = len(per_seed)
    lines = [f"| cell | forget MC | gap to oracle | forgotten (of {n}) | retain MC / original | retain kept (of {n}) "
             f"| both (of {n}) | stab R | stab R >= {STABLE} (of {n}) | steps | guard restored (of {n}) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, rows in cells.items():
        fmc = [r["forget"]["mc_acc"] for r in rows]
        gap = [r["forgotten"]["mc_acc"]["gap"] for r in rows if "mc_acc" in (r.get("forgotten") or {})]
        forgot = [bool((r.get("forgotten") or {}).get("value")) for r in rows]
        ratio = [r["retain"]["mc_acc"] / r["_original"]["retain"]["mc_acc"] for r in rows]
        kept = [x >= RETAIN_KEPT for x in ratio]
        stab = [r["routing"]["stability"]["retain"] for r in rows]
        restored = sum((r.get("retain_guard") or {}).get("restored_step") is not None for r in rows)
        lines.append(f"| {label} | {_ms(fmc)} | {_ms(gap, '{:+.3f}')} | {sum(forgot)} | {_ms(ratio)} | {sum(kept)} "
                     f"| {sum(f and k for f, k in zip(forgot, kept))} | {_ms(stab)} | {sum(s >= STABLE for s in stab)} "
                     f"| {_ms([float(r['steps']) for r in rows], '{:.0f}')} | {restored} |")
    return lines


def adapter_vs_base(per_seed: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[str]:
    """Win / loss / tie on retain MC at matched forgetting, per adapter x base method."""
    from moe_unlearn.eval.intervals import difference_interval

    counts: dict[str, list[int]] = {}
    for _, results in per_seed.values():
        by = {r["run"]: r for r in results}
        for label, r in by.items():
            if "+" not in label or label.count("+") > 1:
                continue
            base = by.get(label.split("+")[0])
            key = counts.setdefault(label, [0, 0, 0, 0])  # win, loss, tie, not matched
            if not base or not (r.get("forgotten") or {}).get("value") or not (base.get("forgotten") or {}).get("value"):
                key[3] += 1
                continue
            d = difference_interval(r["per_example"]["retain"]["mc_acc"], base["per_example"]["retain"]["mc_acc"],
                                    paired=True)
            key[0 if d[1] > 0 else 1 if d[2] < 0 else 2] += 1
    lines = ["| adapter run | wins | losses | ties (inside noise) | not matched (a side not forgotten) |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {w} | {l} | {t} | {u} |" for k, (w, l, t, u) in sorted(counts.items())]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("seeds", type=int, nargs="+")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:cut]), argv[cut + 1:]
    per_seed = {}
    for seed in args.seeds:
        out = args.out / f"seed-{seed}"
        results = run_seed(out, seed, overrides)
        original = json.loads((out / "reference" / "original" / "metrics.json").read_text())
        per_seed[seed] = (original, results)
        print(f"seed {seed}: {len(results)} runs", flush=True)
    print(f"seeds: {', '.join(map(str, args.seeds))}")
    print("\n".join(table(per_seed)))
    print()
    print("\n".join(adapter_vs_base(per_seed)))


if __name__ == "__main__":
    main()
