"""Base unlearning objectives, one file each; `METHODS` finds them on first use."""

from moe_unlearn.methods.base import METHODS, Method, MethodOutput

__all__ = ["METHODS", "Method", "MethodOutput"]
