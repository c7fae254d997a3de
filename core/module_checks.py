"""Checks that find broken modules: shapes from the header alone, values (NaN/Inf, alpha) from the tensors.

A broken module is one no loader could use as it is: a factor that is a scalar or a vector where a matrix is
needed, a rank of 0, factors whose inner sizes disagree (``up`` (out, r) with ``down`` (r', in), r != r'),
an alpha that is not one number, or (from the data) NaN/Inf values and an alpha of 0, below 0 or not finite.
Each check returns the user-facing reason, or None. The reader marks such modules ``Problem.BROKEN``;
inspect reports them by name, chop and resize refuse to write them.
"""
from __future__ import annotations

import math
from typing import Mapping

# Roles that are matrices (or conv kernels): at least 2-D, no zero dimension.
MATRIX_ROLES = ("up", "down", "mid", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
                "a1", "a2", "b1", "b2", "diff")
# (kind, left role, right role): left.shape[1] must equal right.shape[0] (the inner rank).
INNER_PAIRS = (
    (("lora", "locon", "tucker"), "up", "down"),
    (("loha",), "hada_w1_a", "hada_w1_b"),
    (("loha",), "hada_w2_a", "hada_w2_b"),
    (("lokr",), "lokr_w1_a", "lokr_w1_b"),
    (("lokr",), "lokr_w2_a", "lokr_w2_b"),
)
# Kinds whose effective scale is alpha / rank: there an alpha of 0 silences the module.
ALPHA_KINDS = ("lora", "locon", "tucker", "loha", "loha_tucker", "lokr", "glora")


def shape_problem(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why the module's shapes (header only) make it unusable, or None."""
    for role in MATRIX_ROLES:
        s = shapes.get(role)
        if s is None:
            continue
        if len(s) < 2:
            return f"{role} is {len(s)}-D {list(s)}; a factor must be a matrix (2-D) or a conv kernel (4-D)"
        if 0 in s:
            return f"{role} has shape {list(s)}: rank 0 or an empty dimension"
    for kinds, left, right in INNER_PAIRS:
        if left == "lokr_w2_a" and "lokr_t2" in shapes:
            continue  # Tucker LoKr: w2_a is (rank, out), w2_b (rank, in)
        if kind in kinds and left in shapes and right in shapes and shapes[left][1] != shapes[right][0]:
            return (f"rank mismatch: {left} {list(shapes[left])} has rank {shapes[left][1]} but {right} "
                    f"{list(shapes[right])} has rank {shapes[right][0]}")
    if kind == "tucker" and "mid" in shapes and shapes["mid"][0] != shapes["down"][0]:
        return f"rank mismatch: mid {list(shapes['mid'])} does not match down {list(shapes['down'])}"
    if "alpha" in shapes and math.prod(shapes["alpha"]) != 1:
        return f"alpha has shape {list(shapes['alpha'])} ({math.prod(shapes['alpha'])} values); expected one number"
    return None


def value_problem(kind: str, tensors: Mapping[str, "torch.Tensor"]) -> str | None:
    """Why the module's values make it unusable (NaN/Inf anywhere, a bad alpha), or None.
    ``tensors``: role -> tensor, as read from the file."""
    for role, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
            what = "NaN" if bool(t.isnan().any()) else "Inf"
            return f"{role} holds {what} values"
    alpha = tensors.get("alpha")
    if alpha is not None and kind in ALPHA_KINDS and alpha.numel() == 1:
        a = float(alpha.reshape(-1)[0])
        if a == 0:
            return "alpha is 0, so the module has no effect (scale alpha/rank = 0)"
        if a < 0:
            return f"alpha is {a:g}; it must be > 0"
    return None


def max_abs(tensors: Mapping[str, "torch.Tensor"], roles) -> float:
    """The largest |value| among the given roles' tensors (0 for none)."""
    best = 0.0
    for role in roles:
        t = tensors[role]
        if t.numel():
            best = max(best, float(t.abs().max()))
    return best


def refuse_broken(lora) -> None:
    """Raise ``ChopShopError`` naming the first broken module, or the first tensor holding NaN/Inf, of a
    LoraFile about to be written (reads every tensor: meant for in-memory LoRAs)."""
    from .errors import ChopShopError
    from .lora_file import Problem
    for m in lora.modules:
        if m.has_problem(Problem.BROKEN):
            why = next(str(p) for p in m.problems if p.kind == Problem.BROKEN)
            raise ChopShopError(f"{m.base}: {why}; nothing was written")
    for key in lora.store.keys():
        t = lora.store.tensor(key)
        if t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
            raise ChopShopError(f"{key}: holds NaN or Inf values; a LoRA with them is never written")

