"""The embedded offline benchmark: fictitious knowledge, a tiny trained MoE, and its cache."""

from moe_unlearn.benchmark.build import build_benchmark
from moe_unlearn.benchmark.cache import cache_root, cached_benchmark, resolve_manifest
from moe_unlearn.benchmark.domains import DEFAULT_FORGET_DOMAIN, DOMAINS
from moe_unlearn.benchmark.presets import PRESETS

__all__ = ["DEFAULT_FORGET_DOMAIN", "DOMAINS", "PRESETS", "build_benchmark", "cache_root", "cached_benchmark", "resolve_manifest"]
