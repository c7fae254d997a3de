"""Block-weight vectors: ``global,w1,...,wN`` over the blocks present, or over the architecture's full layout.

Grammar (docs/blocks.md §7): an optional ``NAME:`` prefix; comma-separated plain decimal numbers
(``1``, ``0.5``, ``.5``, ``1e-3``); whitespace and one trailing comma are ignored. Weights must be finite
and not negative. The first number is the global multiplier of every block weight; it never touches text
encoders or other non-block keys. A vector as long as 1 + the blocks present applies by position; one as
long as 1 + the full layout applies by block label (both coincide when every block is present).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import ChopShopError

_NUMBER = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class BlockWeights:
    """Resolved weights: effective weight (global x w_i) per block label present, and how they were read."""
    weights: dict[str, float]
    global_weight: float
    mode: str                        # "positional" or "by_label"
    text: str
    warnings: list[str] = field(default_factory=list)


def split_numbers(text: str) -> tuple[list[float], str]:
    """Parse the numbers of a vector string; returns (numbers, the text without a NAME: prefix)."""
    if text is None or not str(text).strip():
        raise ChopShopError("empty block vector: give comma-separated weights such as 1,0,1,1")
    body = str(text).strip()
    if ":" in body:
        body = body.split(":", 1)[1]
    items = [s.strip() for s in body.split(",")]
    if items and items[-1] == "":
        items.pop()
    values = []
    for pos, item in enumerate(items, 1):
        if item == "":
            raise ChopShopError(f"block vector: position {pos} is empty (two commas in a row?)")
        if item.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise ChopShopError(f"block vector: position {pos} is '{item}'; weights must be finite numbers")
        if item.startswith("-") and _NUMBER.match(item[1:]):
            raise ChopShopError(f"block vector: position {pos} is negative ({item}); weights must be 0 or more")
        if not _NUMBER.match(item):
            raise ChopShopError(f"block vector: position {pos} is '{item}', not a number "
                                "(use plain decimals such as 0, 1 or 0.5)")
        v = float(item)
        if not math.isfinite(v):
            raise ChopShopError(f"block vector: position {pos} ({item}) is not a finite number")
        values.append(v)
    if not values:
        raise ChopShopError("empty block vector: give comma-separated weights such as 1,0,1,1")
    return values, body.strip()


def length_message(present: list[str], layout: list[str] | None, got: int, source: str = "in this file") -> str:
    accepted = [f"{1 + len(present)} (global + the {len(present)} blocks {source}: "
                f"1,{','.join(present)})"]
    if layout and list(layout) != list(present):
        accepted.append(f"{1 + len(layout)} (global + the full layout: 1,{','.join(layout)})")
    return f"block vector has {got} numbers; expected " + " or ".join(accepted)


def parse_vector(text: str, present: list[str], layout: list[str] | None,
                 source: str = "in this file") -> BlockWeights:
    """Resolve a vector string against the blocks present (model order) and the full layout; ``source``
    says where the present blocks come from in messages ("in this file", "of the SDXL layout")."""
    values, body = split_numbers(text)
    g, rest = values[0], values[1:]
    warnings: list[str] = []
    if len(rest) == len(present):
        per_label = dict(zip(present, rest))
        mode = "positional"
    elif layout and len(rest) == len(layout):
        given = dict(zip(layout, rest))
        per_label = {}
        for lab in present:
            if lab in given:
                per_label[lab] = given[lab]
            else:
                per_label[lab] = 1.0
                warnings.append(f"block {lab} is not part of the full layout; kept at the global weight")
        mode = "by_label"
    else:
        raise ChopShopError(length_message(present, layout, len(values), source))
    return BlockWeights({lab: g * w for lab, w in per_label.items()}, g, mode, body, warnings)


def weights_from_labels(label_weights: dict[str, float], global_weight: float, present: list[str],
                        name: str) -> BlockWeights:
    """Weights from a by-label map (a preset): blocks the map does not name keep weight 1 (warned)."""
    warnings, out = [], {}
    for lab in present:
        if lab in label_weights:
            out[lab] = global_weight * label_weights[lab]
        else:
            out[lab] = global_weight
            warnings.append(f"preset '{name}' does not name block {lab}; kept at the global weight")
    text = ",".join(_fmt(v) for v in [global_weight, *(label_weights.get(lab, 1.0) for lab in present)])
    return BlockWeights(out, global_weight, "by_label", text, warnings)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def format_vector(global_weight: float, weights: list[float]) -> str:
    return ",".join(_fmt(v) for v in [global_weight, *weights])
