"""The method labels a results CSV may contain, one colour per method and one marker per paper.

Adding a method to the project's tables is one entry in `METHODS` (label -> colour); a CSV
row with a label missing here is rejected when results are loaded.  A composed method's label
`outer(inner)` is known when both parts are, and gets a stable colour of its own.  A paper whose numbers
are plotted gets its marker from `PAPER_MARKERS` (others get a stable one of their own).
"""

from __future__ import annotations

import zlib

# label (the results CSV's `method` column) -> colour, the same in every plot
METHODS: dict[str, str] = {
    "dense": "#333333",
    "l1": "#1f77b4",
    "random": "#8c564b",
    "nuclear": "#d62728",
    "hrank": "#ff7f0e",
    "taylor": "#9467bd",
    "lrpet": "#2ca02c",
    "svd": "#e6ab02",
    "basis": "#1b9e77",
    "double": "#7570b3",
    "taylor_gates": "#e7298a",
    "lop": "#66a61e",
    "cst": "#a6761d",
}

# paper (the `paper` column of results/paper_numbers.csv) -> marker of its points in every plot
PAPER_MARKERS: dict[str, str] = {
    "energy_aware": "*",
    "hrank": "v",
    "hrankplus": "D",
    "chip": "X",
    "lrpet": "P",
    "spatial_transform": "h",
    "basis_pruning": "s",
    "linear_overparam": "p",
}

# colours for labels that are not methods (a paper's competitor, a curve of a sweep)
_FALLBACK = ("#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#393b79", "#637939", "#843c39", "#7b4173")
_FALLBACK_MARKERS = ("^", "<", ">", "8", "H", "d")


def _pick(name: str, choices: tuple[str, ...]) -> str:
    """A stable choice for `name` (the same across runs and machines)."""
    return choices[zlib.crc32(name.encode()) % len(choices)]


def is_known(label: str) -> bool:
    """A label of `METHODS`, or `outer(inner)` with both parts known (composition)."""
    outer, paren, inner = label.partition("(")
    if not paren:
        return label in METHODS
    return inner.endswith(")") and outer in METHODS and is_known(inner[:-1])


def color_for(label: str) -> str:
    """The colour of a method label; any other label gets a stable colour of its own."""
    return METHODS.get(label) or _pick(label, _FALLBACK)


def marker_for(paper: str) -> str:
    """The marker used for every point quoted from `paper`."""
    return PAPER_MARKERS.get(paper) or _pick(paper, _FALLBACK_MARKERS)
