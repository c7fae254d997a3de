"""Adapter types and their math: the one place the formats' delta-W formulas live (formats.md §2).

Notation: ``mat(ΔW)`` is the delta flattened to ``(out, in')`` with ``in' = in·kh·kw``; ``γ`` the effective
scale. Every function takes ``t``: a dict role -> float32 tensor of ONE module (roles from ``keys.py``).
Factored forms never build the dense ``(out, in')`` matrix unless that is the cheaper route.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from .errors import ChopShopError
from .svd import fold_tucker, khatri_rao_cols, khatri_rao_rows, tucker_rows

Tensors = Mapping[str, torch.Tensor]

# kind -> human name used in reports
KIND_NAMES = {
    "lora": "LoRA", "locon": "LoCon", "tucker": "Tucker LoCon", "loha": "LoHa", "loha_tucker": "Tucker LoHa",
    "lokr": "LoKr", "full": "full diff", "bias": "bias diff", "norm": "norm", "ia3": "(IA)^3", "glora": "GLoRA",
    "oft": "OFT", "boft": "BOFT", "set": "set weight",
}
# Kinds whose delta needs the base weight W0 (not measurable, not resizable, not linearly scalable).
NEEDS_BASE = {"ia3", "glora", "oft", "boft", "set"}
# The tensors to multiply by w so that ΔW scales exactly by w (one factor per additive term).
SCALE_ROLES = {
    "lora": ("up",), "locon": ("up",), "tucker": ("up",),
    "loha": ("hada_w1_a",), "loha_tucker": ("hada_w1_a",),
    "lokr": ("lokr_w1", "lokr_w1_a"),  # whichever of the two the module has
    "full": ("diff",), "bias": ("diff_b",), "norm": ("w_norm", "b_norm"),
    "ia3": ("ia3_weight",), "glora": ("a1", "b1"),
}
# Extra additive tensors that ride along with any adapter and scale with it.
EXTRA_SCALE_ROLES = ("diff_b", "up_bias")


def classify(roles: Mapping[str, tuple[int, ...]]) -> str:
    """The adapter kind of a module from its roles and their shapes (header only)."""
    if "up" in roles and "down" in roles:
        if "mid" in roles:
            return "tucker"
        return "locon" if len(roles["down"]) > 2 else "lora"
    if "hada_w1_a" in roles:
        return "loha_tucker" if "hada_t1" in roles else "loha"
    if any(r.startswith("lokr_") for r in roles):
        return "lokr"
    if "a1" in roles:
        return "glora"
    if "oft_blocks" in roles:
        return "boft" if len(roles["oft_blocks"]) == 4 else "oft"
    if "ia3_weight" in roles:
        return "ia3"
    if "diff" in roles:
        return "full"
    if "w_norm" in roles or "b_norm" in roles:
        return "norm"
    if "set_weight" in roles:
        return "set"
    if "diff_b" in roles or "up_bias" in roles:
        return "bias"
    raise ChopShopError(f"module with tensors {sorted(roles)} is no adapter this tool knows")


def missing_roles(kind: str, roles: Mapping[str, object]) -> list[str]:
    """Roles a module of ``kind`` needs but lacks (a half module), for a clear message."""
    need = {
        "loha": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"],
        "loha_tucker": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t2"],
        "glora": ["a1", "a2", "b1", "b2"],
    }.get(kind, [])
    out = [r for r in need if r not in roles]
    if kind == "lokr":
        if "lokr_w1" not in roles and not {"lokr_w1_a", "lokr_w1_b"} <= set(roles):
            out.append("lokr_w1 (or lokr_w1_a + lokr_w1_b)")
        if "lokr_w2" not in roles and not {"lokr_w2_a", "lokr_w2_b"} <= set(roles):
            out.append("lokr_w2 (or lokr_w2_a + lokr_w2_b)")
    return out


def nominal_rank(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The rank the file states (``down`` rows, ``hada_w1_b`` rows, decomposed LoKr rank)."""
    if kind in ("lora", "locon", "tucker"):
        return shapes["down"][0]
    if kind in ("loha", "loha_tucker"):
        return shapes["hada_w1_b"][0]
    if kind == "lokr":
        if "lokr_w2_b" in shapes:
            return shapes["lokr_w2_b"][0]
        if "lokr_w1_b" in shapes:
            return shapes["lokr_w1_b"][0]
        return None
    if kind == "glora":
        return shapes["a2"][0]
    return None


def gamma(kind: str, shapes: Mapping[str, tuple[int, ...]], alpha: float | None) -> float:
    """The effective scale γ (ComfyUI's rules): alpha / rank, 1 without alpha; LoKr with no decomposed
    factor ignores alpha; full diffs and norms have no alpha."""
    if kind in ("full", "bias", "norm", "set", "ia3", "oft", "boft"):
        return 1.0
    r = nominal_rank(kind, shapes)
    if alpha is None or r is None:
        return 1.0
    return alpha / r


def delta_shape(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The shape of ΔW as far as the module's own tensors tell (LoHa convs are flattened: 2-D)."""
    s = shapes
    if kind in ("lora", "locon"):
        return (s["up"][0], *s["down"][1:])
    if kind == "tucker":
        return (s["up"][0], s["down"][1], *s["mid"][2:])
    if kind == "loha":
        return (s["hada_w1_a"][0], s["hada_w1_b"][1])
    if kind == "loha_tucker":
        return (s["hada_w1_a"][1], s["hada_w1_b"][1], *s["hada_t1"][2:])
    if kind == "lokr":
        a, c = (s["lokr_w1"] if "lokr_w1" in s else (s["lokr_w1_a"][0], s["lokr_w1_b"][1]))[:2]
        if "lokr_w2" in s:
            w2 = s["lokr_w2"]
            return (a * w2[0], c * w2[1], *w2[2:])
        if "lokr_t2" in s:
            return (a * s["lokr_w2_a"][1], c * s["lokr_w2_b"][1], *s["lokr_t2"][2:])
        return (a * s["lokr_w2_a"][0], c * s["lokr_w2_b"][1])
    if kind == "full":
        return tuple(s["diff"])
    if kind == "glora":
        return (s["b1"][0], s["b2"][1])
    if kind == "ia3":
        return None
    return None


def rows_cols(shape: tuple[int, ...]) -> tuple[int, int]:
    return shape[0], int(math.prod(shape[1:])) if len(shape) > 1 else 1


# ---------------------------------------------------------------------------------------------- factors

@dataclass
class Product:
    """``mat(ΔW) = gamma · B @ A`` with B (out, n) and A (n, in')."""
    B: torch.Tensor
    A: torch.Tensor
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
    D: torch.Tensor


def _loha_terms(t: Tensors) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two Hadamard terms of a LoHa as (A_t (out, r), B_t (r, in'))."""
    if "hada_t1" in t:
        return [(t["hada_w1_a"].T, tucker_rows(t["hada_t1"], t["hada_w1_b"])),
                (t["hada_w2_a"].T, tucker_rows(t["hada_t2"], t["hada_w2_b"]))]
    return [(t["hada_w1_a"], t["hada_w1_b"].flatten(1)), (t["hada_w2_a"], t["hada_w2_b"].flatten(1))]


def _lokr_w(t: Tensors, i: int) -> Product:
    """LoKr factor i (1 or 2) as a Product (out_i, in_i')."""
    full = t.get(f"lokr_w{i}")
    if full is not None:
        m = full.flatten(1)
        return Product(m, torch.eye(m.shape[1], dtype=m.dtype, device=m.device), 1.0) if m.shape[0] >= m.shape[1] \
            else Product(torch.eye(m.shape[0], dtype=m.dtype, device=m.device), m, 1.0)
    a, b = t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"]
    if i == 2 and "lokr_t2" in t:
        return Product(a.T, tucker_rows(t["lokr_t2"], b), 1.0)
    return Product(a, b.flatten(1), 1.0)


def lokr_matrix(t: Tensors, i: int) -> torch.Tensor:
    """LoKr factor i as a dense matrix (small: at most a few thousand squared)."""
    p = _lokr_w(t, i)
    return p.B @ p.A


def factors(kind: str, t: Tensors, g: float) -> Product | Kron | Dense | None:
    """The factored form of ``mat(ΔW)``, or None for kinds that need base weights or have no matrix."""
    if kind in ("lora", "locon"):
        return Product(t["up"].flatten(1), t["down"].flatten(1), g)
    if kind == "tucker":
        return Product(t["up"].flatten(1), fold_tucker(t["mid"], t["down"]), g)
    if kind in ("loha", "loha_tucker"):
        (A1, B1), (A2, B2) = _loha_terms(t)
        return Product(khatri_rao_rows(A1, A2), khatri_rao_cols(B1, B2), g)
    if kind == "lokr":
        return Kron(_lokr_w(t, 1), _lokr_w(t, 2), g)
    if kind == "full":
        return Dense(t["diff"].flatten(1))
    return None


def loha_dense(t: Tensors) -> torch.Tensor:
    """mat(ΔW)/γ of a LoHa built densely: ``(A1 B1) ⊙ (A2 B2)``, (out, in')."""
    (A1, B1), (A2, B2) = _loha_terms(t)
    return (A1 @ B1) * (A2 @ B2)


def loha_prefers_dense(out: int, in_: int, r1: int, r2: int) -> bool:
    """Khatri-Rao width R = r1·r2 gives no saving: dense when R >= min(out, in') or when the factored
    cost ``2(out+in')R²`` exceeds the dense cost ``out·in'·(r1+r2+min(out, in'))`` (resize.md §3.2)."""
    R = r1 * r2
    return R >= min(out, in_) or 2 * (out + in_) * R * R > out * in_ * (r1 + r2 + min(out, in_))


def _gram_energy(B: torch.Tensor, A: torch.Tensor) -> float:
    """‖B @ A‖_F² = Σ (BᵀB) ⊙ (AAᵀ), computed in float64 from the small Gram matrices."""
    B, A = B.double(), A.double()
    return float(((B.T @ B) * (A @ A.T)).sum().clamp_min(0))


def energy(kind: str, t: Tensors, g: float) -> float | None:
    """‖ΔW‖_F² of the module (plus its additive bias/norm deltas), never forming big dense matrices
    when a factored route is cheaper. None for kinds that need base weights."""
    extra = sum(float(t[r].double().pow(2).sum()) for r in EXTRA_SCALE_ROLES if r in t)
    if kind in ("lora", "locon", "tucker"):
        f = factors(kind, t, g)
        return g * g * _gram_energy(f.B, f.A) + extra
    if kind in ("loha", "loha_tucker"):
        (A1, B1), (A2, B2) = _loha_terms(t)
        if loha_prefers_dense(A1.shape[0], B1.shape[1], A1.shape[1], A2.shape[1]):
            return g * g * float(loha_dense(t).double().pow(2).sum()) + extra
        return g * g * _gram_energy(khatri_rao_rows(A1, A2), khatri_rao_cols(B1, B2)) + extra
    if kind == "lokr":
        w1, w2 = _lokr_w(t, 1), _lokr_w(t, 2)
        return g * g * _gram_energy(w1.B, w1.A) * _gram_energy(w2.B, w2.A) + extra
    if kind in ("full", "bias", "norm"):
        return sum(float(t[r].double().pow(2).sum()) for r in ("diff", "w_norm", "b_norm") if r in t) + extra
    return None


def delta(kind: str, t: Tensors, g: float, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Dense ΔW (for tests and small layers only), reshaped to ``shape`` when given."""
    if kind in ("lora", "locon", "tucker"):
        f = factors(kind, t, g)
        d = g * (f.B @ f.A)
    elif kind in ("loha", "loha_tucker"):
        d = g * loha_dense(t)
    elif kind == "lokr":
        d = g * torch.kron(lokr_matrix(t, 1), lokr_matrix(t, 2))
    elif kind == "full":
        d = t["diff"]
    else:
        raise ChopShopError(f"the delta of a {KIND_NAMES.get(kind, kind)} module needs the base weights")
    if shape is None:
        shape = delta_shape(kind, {k: tuple(v.shape) for k, v in t.items()})
    return d.reshape(shape) if shape is not None else d


def roles_to_scale(kind: str, roles) -> list[str]:
    """The roles whose tensors are multiplied by w to scale ΔW (and any bias delta) exactly by w."""
    if kind not in SCALE_ROLES:
        return []
    base = [r for r in SCALE_ROLES[kind] if r in roles]
    if kind == "lokr":
        base = base[:1]
    return base + [r for r in EXTRA_SCALE_ROLES if r in roles and r not in base]
