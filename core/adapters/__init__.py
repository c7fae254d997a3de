"""Adapter types behind one interface (``base.Adapter``); one module per type.

``of(kind)`` gives a type's object; ``classify(shapes)`` recognises a module from its header. The
functions below are thin conveniences over the interface for callers that hold a kind string.
Importing this package does not import torch (header-only inspects and 0/1 chops stay torch-free).
"""
from __future__ import annotations

from typing import Mapping

from ..errors import ChopShopError
from .base import (EXTRA_SCALE_ROLES, KEPT_ROLES, Adapter, Dense, Exact, Kron, Product, Structured,
                   rows_cols)
from .base_dependent import BOFT, IA3, OFT, GLoRA, SetWeight
from .diff import BiasDiff, FullDiff, NormDiff
from .loha import LoHa, TuckerLoHa
from .lokr import LoKr
from .lowrank import LoCon, LoRA, TuckerLoCon

# Recognition order matters: a LoRA with a bias delta is a LoRA, a bias delta alone is a bias diff.
ADAPTERS: tuple[Adapter, ...] = (TuckerLoCon(), LoCon(), LoRA(), TuckerLoHa(), LoHa(), LoKr(), GLoRA(), BOFT(),
                                 OFT(), IA3(), FullDiff(), NormDiff(), SetWeight(), BiasDiff())
BY_KIND: dict[str, Adapter] = {a.kind: a for a in ADAPTERS}
KIND_NAMES = {a.kind: a.name for a in ADAPTERS}
NEEDS_BASE = {a.kind for a in ADAPTERS if a.needs_base}
RESIZABLE = {a.kind for a in ADAPTERS if a.resizable}

__all__ = ["ADAPTERS", "BY_KIND", "KIND_NAMES", "NEEDS_BASE", "RESIZABLE", "EXTRA_SCALE_ROLES", "KEPT_ROLES",
           "Adapter", "Dense", "Exact", "Kron", "Product", "Structured", "rows_cols", "of", "classify",
           "missing_roles", "nominal_rank", "gamma", "delta_shape", "roles_to_scale", "factors", "energy",
           "delta"]


def of(kind: str) -> Adapter:
    return BY_KIND[kind]


def classify(roles: Mapping[str, tuple[int, ...]]) -> str:
    """The adapter kind of a module from its roles and their shapes (header only)."""
    for a in ADAPTERS:
        if a.recognise(roles):
            return a.kind
    raise ChopShopError(f"module with tensors {sorted(roles)} is no adapter this tool knows")


def missing_roles(kind: str, roles) -> list[str]:
    return BY_KIND[kind].missing(roles)


def nominal_rank(kind: str, shapes) -> int | None:
    return BY_KIND[kind].rank(shapes)


def gamma(kind: str, shapes, alpha: float | None) -> float:
    return BY_KIND[kind].gamma(shapes, alpha)


def delta_shape(kind: str, shapes) -> tuple[int, ...] | None:
    return BY_KIND[kind].delta_shape(shapes)


def roles_to_scale(kind: str, roles) -> list[str]:
    return BY_KIND[kind].roles_to_scale(roles)


def factors(kind: str, t, g: float):
    """The factored form of ``mat(ΔW)`` with ``gamma`` set to g, or None where ΔW needs the base weights."""
    f = BY_KIND[kind].factors(t)
    if isinstance(f, (Product, Kron)):
        f.gamma = g
    return f


def energy(kind: str, t, g: float) -> float | None:
    return BY_KIND[kind].energy(t, g)


def delta(kind: str, t, g: float, shape: tuple[int, ...] | None = None):
    """Dense ΔW (tests and small layers only), reshaped to ``shape`` (default: the module's own)."""
    a = BY_KIND[kind]
    d = a.dense(t) if kind == "full" else g * a.dense(t)
    if shape is None:
        shape = a.delta_shape({k: tuple(v.shape) for k, v in t.items()})
    return d.reshape(shape) if shape is not None else d
