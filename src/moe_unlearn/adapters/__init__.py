"""MoE adapters, one file each; `ADAPTERS` finds them on first use."""

from moe_unlearn.adapters.base import ADAPTERS, Adapter

__all__ = ["ADAPTERS", "Adapter"]
