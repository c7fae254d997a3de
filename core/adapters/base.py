"""The interface every adapter type implements (docs/formats.md §2, docs/resize.md §3).

An adapter type knows, from a module's roles and shapes (header only, no torch): whether it is its type
(``recognise``), which roles a complete module needs (``missing``), its rank, its scale γ and ΔW's shape.
From the module's float32 tensors ``t`` (role -> tensor) it gives the factored form of ``mat(ΔW)``, the
energy ‖ΔW‖_F², an exact thin SVD of ``mat(ΔW)/γ`` and, where the type has one, a resize in its own form.
``mat(ΔW)`` is ΔW flattened to ``(out, in')`` with ``in' = in·kh·kw``. torch is imported only by the math.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

Shapes = Mapping[str, tuple[int, ...]]
# Extra additive tensors that ride along with any adapter and scale with it.
EXTRA_SCALE_ROLES = ("diff_b", "up_bias")
# Roles a resize keeps as they are (they are no part of the low-rank factors).
KEPT_ROLES = ("dora_scale", "diff_b", "up_bias", "reshape_weight")


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], int(math.prod(shape[1:])) if len(shape) > 1 else 1


@dataclass
class Product:
    """``mat(ΔW) = gamma · B @ A`` with B (out, n) and A (n, in')."""
    B: Any
    A: Any
    gamma: float


@dataclass
class Kron:
    """``mat(ΔW) = gamma · kron(W1, W2)``; each W is a ``Product`` (gamma 1) of its factors."""
    W1: Product
    W2: Product
    gamma: float


@dataclass
class Dense:
    """``mat(ΔW) = D`` (full diffs): D (out, in')."""
    D: Any


@dataclass
class Exact:
    """An exact thin SVD of ``mat(ΔW)/γ``: ``svd`` a ``core.svd.LazySVD``, ΔW flattened to (rows, cols)."""
    svd: Any
    rows: int
    cols: int


@dataclass
class Structured:
    """A resize that keeps the module's own form: ``tensors`` by role (γ folded in as the form needs;
    ``alpha`` included when the form reads one), the exact Frobenius retention and energy kept."""
    form: str
    tensors: dict
    retention: float
    energy_kept: float
    params: int


class Adapter:
    """Base class: header-only facts first, then the math (tensors ``t`` are float32, γ excluded)."""
    kind = ""
    name = ""
    needs_base = False        # ΔW depends on the base weight W0: not measurable, not resizable
    resizable = False
    scale_roles: tuple[str, ...] = ()   # multiply these by w to scale ΔW by exactly w
    required: tuple[str, ...] = ()
    has_alpha = True

    def recognise(self, shapes: Shapes) -> bool:
        raise NotImplementedError

    def missing(self, shapes: Shapes) -> list[str]:
        return [r for r in self.required if r not in shapes]

    def rank(self, shapes: Shapes) -> int | None:
        return None

    def gamma(self, shapes: Shapes, alpha: float | None) -> float:
        """ComfyUI's rule: alpha / rank, 1 without alpha or without a rank."""
        r = self.rank(shapes)
        if not self.has_alpha or alpha is None or r is None:
            return 1.0
        return alpha / r

    def delta_shape(self, shapes: Shapes) -> tuple[int, ...] | None:
        return None

    def roles_to_scale(self, roles) -> list[str]:
        if not self.scale_roles:
            return []
        base = [r for r in self.scale_roles if r in roles][:1 if self.single_scale_role else None]
        return base + [r for r in EXTRA_SCALE_ROLES if r in roles and r not in base]

    single_scale_role = False

    def param_count(self, shapes: Shapes) -> int:
        """Values stored by the factors (alpha, DoRA scale and bias deltas excluded)."""
        return sum(math.prod(s) for r, s in shapes.items() if r not in ("alpha", *KEPT_ROLES))

    # -------------------------------------------------------------------------------- math (torch)
    def factors(self, t) -> Product | Kron | Dense | None:
        """``mat(ΔW)/γ`` in factored form (``gamma`` 1), or None where ΔW needs W0."""
        return None

    def energy(self, t, g: float) -> float | None:
        """‖ΔW‖_F² (plus additive bias deltas), without dense matrices where a factored route is cheaper."""
        return None

    def dense(self, t) -> Any:
        """``mat(ΔW)/γ`` built densely (tests and small layers)."""
        from ..errors import ChopShopError
        raise ChopShopError(f"the delta of a {self.name} module needs the base weights")

    def decompose(self, t) -> Exact:
        from ..errors import ChopShopError
        raise ChopShopError(f"{self.name} modules cannot be resized")

    def structured(self, t, g: float, target_energy: float, shapes: Shapes) -> Structured | None:
        """The smallest resize in the module's own form keeping at least ``target_energy`` (γ included);
        None when the type has no such form."""
        return None


def extra_energy(t) -> float:
    return sum(float(t[r].double().pow(2).sum()) for r in EXTRA_SCALE_ROLES if r in t)


def gram_energy(B, A) -> float:
    """‖B @ A‖_F² = Σ (BᵀB) ⊙ (AAᵀ), computed in float64 from the small Gram matrices."""
    B, A = B.double(), A.double()
    return float(((B.T @ B) * (A @ A.T)).sum().clamp_min(0))
