"""Cost (parameters, MACs), accuracy and latency."""

from prunelab.measure.cost import Cost, LayerCost, count, param_counts

__all__ = ["Cost", "LayerCost", "count", "param_counts"]
