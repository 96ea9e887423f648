"""MoE adapters; importing this package registers every adapter in ADAPTERS."""

import importlib
import pkgutil

from moe_unlearn.adapters.base import ADAPTERS, Adapter

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["ADAPTERS", "Adapter"]
