"""Performance benchmarks of moe-unlearn (issue 7): one table of measured ratios next to their targets.

Run `scripts/bench.sh` (or `python -m bench.run`); `--smoke` is the seconds-long CI version.
"""
