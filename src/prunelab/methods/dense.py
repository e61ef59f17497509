"""`method=dense`: the uncompressed baseline as a row of its own."""

from prunelab.methods.base import Method, register


@register("dense")
class Dense(Method):
    """Changes nothing; with `trainer=none` the row reports the cached dense model."""
