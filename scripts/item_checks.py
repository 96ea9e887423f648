"""Print the content-free item checks over benchmark seeds as a markdown table (docs/evaluation.md).

    python scripts/item_checks.py [SEED ...]      # default: seeds 1..10
"""

import sys

from moe_unlearn.benchmark.item_checks import CHANCE, TOLERANCE, check_items

seeds = [int(s) for s in sys.argv[1:]] or list(range(1, 11))
per: dict[tuple[str, str], list[float]] = {}
for seed in seeds:
    for scorer, accs in check_items(seed).items():
        for split, acc in accs.items():
            per.setdefault((scorer, split), []).append(acc)
splits = sorted({s for _, s in per}, key=["forget", "retain", "holdout", "utility"].index)
print(f"seeds {seeds}; cell: mean [min, max] over seeds; chance {CHANCE} +- {TOLERANCE}")
print("| scorer | " + " | ".join(splits) + " |")
print("|---|" + "---|" * len(splits))
for scorer in dict.fromkeys(s for s, _ in per):
    cells = []
    for split in splits:
        v = per[(scorer, split)]
        mean = sum(v) / len(v)
        mark = "" if abs(mean - CHANCE) <= TOLERANCE else " (off chance)"
        cells.append(f"{mean:.3f} [{min(v):.3f}, {max(v):.3f}]{mark}")
    print(f"| {scorer} | " + " | ".join(cells) + " |")
