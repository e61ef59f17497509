"""Compression methods, registered by `method.kind` (see base.py for the contract)."""

from prunelab.methods import channel, dense, lrpet  # noqa: F401
from prunelab.methods.base import METHODS, Context, Method, build_method, register

__all__ = ["METHODS", "Context", "Method", "build_method", "register"]
