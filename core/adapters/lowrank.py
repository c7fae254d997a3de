"""LoRA, LoCon and Tucker LoCon: ``mat(ΔW) = γ · up @ down`` (Tucker: ``down`` with ``mid`` folded in)."""
from __future__ import annotations

import math

from .base import Adapter, Exact, Product, Structured, extra_energy, gram_energy


class LoRA(Adapter):
    kind, name = "lora", "LoRA"
    resizable = True
    scale_roles = ("up",)
    required = ("up", "down")

    def recognise(self, shapes):
        return "up" in shapes and "down" in shapes and "mid" not in shapes and len(shapes["down"]) <= 2

    def rank(self, shapes):
        return shapes["down"][0]

    def delta_shape(self, shapes):
        return (shapes["up"][0], *shapes["down"][1:])

    def factors(self, t):
        return Product(t["up"].flatten(1), t["down"].flatten(1), 1.0)

    def energy(self, t, g):
        f = self.factors(t)
        return g * g * gram_energy(f.B, f.A) + extra_energy(t)

    def dense(self, t):
        f = self.factors(t)
        return f.B @ f.A

    def decompose(self, t):
        from ..svd import svd_product_lazy
        f = self.factors(t)
        return Exact(svd_product_lazy(f.B, f.A), f.B.shape[0], f.A.shape[1])


class LoCon(LoRA):
    """A LoRA on a convolution: ``down`` (r, in, kh, kw), ``up`` (out, r, 1, 1)."""
    kind, name = "locon", "LoCon"

    def recognise(self, shapes):
        return "up" in shapes and "down" in shapes and "mid" not in shapes and len(shapes["down"]) > 2


class TuckerLoCon(LoRA):
    """``ΔW[p, q, *k] = γ Σ_ij up[p, i] mid[i, j, *k] down[j, q]``: mid (r1, r2, *kernel) between a 1x1
    ``up`` (out, r1, 1, 1) and a 1x1 ``down`` (r2, in, 1, 1); rank = r2 (ComfyUI's alpha divisor)."""
    kind, name = "tucker", "Tucker LoCon"
    required = ("up", "down", "mid")

    def recognise(self, shapes):
        return "up" in shapes and "down" in shapes and "mid" in shapes

    def delta_shape(self, shapes):
        return (shapes["up"][0], shapes["down"][1], *shapes["mid"][2:])

    def factors(self, t):
        from ..svd import fold_tucker
        return Product(t["up"].flatten(1), fold_tucker(t["mid"], t["down"]), 1.0)

    def structured(self, t, g, target_energy, shapes):
        """Truncate the core (docs/resize.md §6): rotate up and down to orthonormal bases, take the core's
        mode-1 and mode-2 singular bases (HOSVD), keep the leading (k1, k2) block. ΔW' = P_out ΔW P_in is an
        orthogonal projection, so its energy is exactly the kept block's and retention is exact."""
        import torch
        up, down, mid = t["up"].flatten(1), t["down"].flatten(1), t["mid"]
        kernel = tuple(mid.shape[2:])
        K = math.prod(kernel)
        Qu, Ru = torch.linalg.qr(up.double(), mode="reduced")           # (out, p), (p, r1)
        Qd, Rd = torch.linalg.qr(down.double().T, mode="reduced")       # (in, q), (q, r2)
        C = torch.einsum("ai,ijk,bj->abk", Ru, mid.double().reshape(*mid.shape[:2], K), Rd)  # (p, q, K)
        p, q = C.shape[:2]
        U1 = torch.linalg.svd(C.reshape(p, q * K), full_matrices=True)[0]
        U2 = torch.linalg.svd(C.permute(1, 0, 2).reshape(q, p * K), full_matrices=True)[0]
        G = torch.einsum("ax,abk,by->xyk", U1, C, U2)
        cum = (G * G).sum(2).cumsum(0).cumsum(1) * (g * g)              # energy of the (k1, k2) block
        out_, in_ = up.shape[0], down.shape[1]
        k1s = torch.arange(1, p + 1, dtype=torch.float64)[:, None]
        k2s = torch.arange(1, q + 1, dtype=torch.float64)[None, :]
        params = k1s * out_ + k1s * k2s * K + k2s * in_
        ok = cum >= target_energy * (1 - 1e-9)
        if not bool(ok.any()):
            return None
        flat = int(torch.where(ok, params, torch.full_like(params, math.inf)).flatten().argmin())
        k1, k2 = flat // q + 1, flat % q + 1
        new_up = (Qu @ U1[:, :k1]).float().reshape(out_, k1, *([1] * len(kernel)))
        new_down = (Qd @ U2[:, :k2]).T.float().reshape(k2, in_, *([1] * len(kernel)))
        new_mid = G[:k1, :k2].float().reshape(k1, k2, *kernel)
        total = float(cum[-1, -1])
        kept = float(cum[k1 - 1, k2 - 1])
        tensors = {"up": new_up, "mid": new_mid, "down": new_down, "alpha": torch.tensor(g * k2)}
        return Structured("Tucker LoCon", tensors, math.sqrt(kept / total) if total > 0 else 1.0, kept,
                          int(params[k1 - 1, k2 - 1]))
