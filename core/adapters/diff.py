"""Plain weight differences: full ΔW (``diff``), bias-only deltas and norm-layer deltas (γ = 1)."""
from __future__ import annotations

from .base import Adapter, Dense, Exact, extra_energy


class FullDiff(Adapter):
    kind, name = "full", "full diff"
    resizable = True
    scale_roles = ("diff",)
    has_alpha = False

    def recognise(self, shapes):
        return "diff" in shapes

    def delta_shape(self, shapes):
        return tuple(shapes["diff"])

    def factors(self, t):
        return Dense(t["diff"].flatten(1))

    def energy(self, t, g):
        return float(t["diff"].double().pow(2).sum()) + extra_energy(t)

    def dense(self, t):
        return t["diff"].flatten(1)

    def decompose(self, t):
        from ..svd import LazySVD, svd_dense
        D = t["diff"].flatten(1)
        return Exact(LazySVD.of(svd_dense(D)), D.shape[0], D.shape[1])


class BiasDiff(Adapter):
    kind, name = "bias", "bias diff"
    scale_roles = ("diff_b",)
    has_alpha = False

    def recognise(self, shapes):
        return "diff_b" in shapes or "up_bias" in shapes

    def energy(self, t, g):
        return extra_energy(t)


class NormDiff(Adapter):
    kind, name = "norm", "norm"
    scale_roles = ("w_norm", "b_norm")
    has_alpha = False

    def recognise(self, shapes):
        return "w_norm" in shapes or "b_norm" in shapes

    def energy(self, t, g):
        return sum(float(t[r].double().pow(2).sum()) for r in ("w_norm", "b_norm") if r in t) + extra_energy(t)
