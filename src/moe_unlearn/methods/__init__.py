"""Base unlearning objectives; importing this package registers every method in METHODS."""

import importlib
import pkgutil

from moe_unlearn.methods.base import METHODS, Method, MethodOutput

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "losses"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["METHODS", "Method", "MethodOutput"]
