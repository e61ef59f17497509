"""Compression methods, registered by `method.kind` (see base.py for the contract).

A new method module is imported here so that its `@register` runs.
"""

from prunelab.methods import basis, channel, channel_gates, cst, dense, lop, lrpet, svd  # noqa: F401
from prunelab.methods.base import METHODS, Composite, Context, Method, build_method, register

__all__ = ["METHODS", "Composite", "Context", "Method", "build_method", "register"]
