"""LoKr: ``mat(ΔW) = γ · kron(W1, W2)``; each W is stored full (``lokr_w1``) or as a product
(``lokr_w1_a @ lokr_w1_b``; W2 may be a Tucker product with ``lokr_t2``). ComfyUI divides alpha by the rank
of the decomposed factor (W2's when both are) and ignores alpha when neither is decomposed."""
from __future__ import annotations

import math

from .base import Adapter, Exact, Kron, Product, Structured, extra_energy, gram_energy


def _side(shapes, i: int) -> tuple[int, int] | None:
    """(rows, cols') of factor i from the header."""
    if f"lokr_w{i}" in shapes:
        s = shapes[f"lokr_w{i}"]
        return s[0], math.prod(s[1:])
    if f"lokr_w{i}_a" in shapes and f"lokr_w{i}_b" in shapes:
        a, b = shapes[f"lokr_w{i}_a"], shapes[f"lokr_w{i}_b"]
        if i == 2 and "lokr_t2" in shapes:
            return a[1], b[1] * math.prod(shapes["lokr_t2"][2:])
        return a[0], math.prod(b[1:])
    return None


class LoKr(Adapter):
    kind, name = "lokr", "LoKr"
    resizable = True
    scale_roles = ("lokr_w1", "lokr_w1_a")
    single_scale_role = True

    def recognise(self, shapes):
        return any(r.startswith("lokr_") for r in shapes)

    def missing(self, shapes):
        out = []
        for i in (1, 2):
            if f"lokr_w{i}" not in shapes and not {f"lokr_w{i}_a", f"lokr_w{i}_b"} <= set(shapes):
                out.append(f"lokr_w{i} (or lokr_w{i}_a + lokr_w{i}_b)")
        return out

    def rank(self, shapes):
        if "lokr_w2_b" in shapes:
            return shapes["lokr_w2_b"][0]
        if "lokr_w1_b" in shapes:
            return shapes["lokr_w1_b"][0]
        return None

    def delta_shape(self, shapes):
        s = shapes
        a, c = (s["lokr_w1"] if "lokr_w1" in s else (s["lokr_w1_a"][0], s["lokr_w1_b"][1]))[:2]
        if "lokr_w2" in s:
            w2 = s["lokr_w2"]
            return (a * w2[0], c * w2[1], *w2[2:])
        if "lokr_t2" in s:
            return (a * s["lokr_w2_a"][1], c * s["lokr_w2_b"][1], *s["lokr_t2"][2:])
        return (a * s["lokr_w2_a"][0], c * s["lokr_w2_b"][1])

    def factor(self, t, i: int) -> Product:
        """Factor i (1 or 2) as a Product (rows_i, cols_i')."""
        import torch
        full = t.get(f"lokr_w{i}")
        if full is not None:
            m = full.flatten(1)
            eye = torch.eye(min(m.shape), dtype=m.dtype, device=m.device)
            return Product(m, eye, 1.0) if m.shape[0] >= m.shape[1] else Product(eye, m, 1.0)
        a, b = t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"]
        if i == 2 and "lokr_t2" in t:
            from ..svd import tucker_rows
            return Product(a.T, tucker_rows(t["lokr_t2"], b), 1.0)
        return Product(a, b.flatten(1), 1.0)

    def matrix(self, t, i: int):
        p = self.factor(t, i)
        return p.B @ p.A

    def factors(self, t):
        return Kron(self.factor(t, 1), self.factor(t, 2), 1.0)

    def energy(self, t, g):
        w1, w2 = self.factor(t, 1), self.factor(t, 2)
        return g * g * gram_energy(w1.B, w1.A) * gram_energy(w2.B, w2.A) + extra_energy(t)

    def dense(self, t):
        import torch
        return torch.kron(self.matrix(t, 1), self.matrix(t, 2))

    def decompose(self, t):
        """σ(kron(W1, W2)) = {σ_i(W1)·σ_j(W2)} (docs/resize.md §3.3); vectors only for the kept k."""
        from ..svd import LazySVD, kron_spectrum, svd_kron, svd_product
        w = [self.factor(t, i) for i in (1, 2)]
        s1, s2 = (svd_product(p.B, p.A) for p in w)

        def vectors(k):
            U, _, Vh = svd_kron(s1, s2, k)
            return U, Vh
        rows, cols = w[0].B.shape[0] * w[1].B.shape[0], w[0].A.shape[1] * w[1].A.shape[1]
        return Exact(LazySVD(kron_spectrum(s1[1], s2[1]), vectors), rows, cols)

    def structured(self, t, g, target_energy, shapes):
        """Truncate each factor's rank (docs/resize.md §6): with W_i's energy fractions c_i(k), keeping
        (k1, k2) keeps exactly c1(k1)·c2(k2) of ‖ΔW‖². The cheapest (k1, k2) meeting the target wins; each
        factor is stored full or as a product, whichever is smaller; γ is folded into W1 (no alpha)."""
        import torch
        from ..svd import svd_product
        if "lokr_t2" in t:
            return None
        sides = [self.factor(t, i) for i in (1, 2)]
        svds = [svd_product(p.B.double(), p.A.double()) for p in sides]
        e = [s[1].double() ** 2 for s in svds]
        cum = torch.outer(e[0].cumsum(0), e[1].cumsum(0)) * (g * g)
        dims = [(p.B.shape[0], p.A.shape[1]) for p in sides]
        cost = [torch.tensor([min(r * c, k * (r + c)) for k in range(1, len(ei) + 1)], dtype=torch.float64)
                for (r, c), ei in zip(dims, e)]
        params = cost[0][:, None] + cost[1][None, :]
        ok = cum >= target_energy * (1 - 1e-9)
        if not bool(ok.any()):
            return None
        flat = int(torch.where(ok, params, torch.full_like(params, math.inf)).flatten().argmin())
        ks = (flat // len(e[1]) + 1, flat % len(e[1]) + 1)
        tensors = {}
        for i, (U, S, Vh), k, (r, c), scale in zip((1, 2), svds, ks, dims, (g, 1.0)):
            if r * c <= k * (r + c):
                tensors[f"lokr_w{i}"] = (scale * (U[:, :k] * S[:k]) @ Vh[:k]).float()
            else:
                tensors[f"lokr_w{i}_a"] = (scale * U[:, :k] * S[:k].sqrt()).float()
                tensors[f"lokr_w{i}_b"] = (S[:k].sqrt()[:, None] * Vh[:k]).float()
        if "lokr_w2" in tensors and len(shapes.get("lokr_w2", ())) > 2:
            tensors["lokr_w2"] = tensors["lokr_w2"].reshape(-1, *shapes["lokr_w2"][1:])
        total, kept = float(cum[-1, -1]), float(cum[ks[0] - 1, ks[1] - 1])
        return Structured("LoKr", tensors, math.sqrt(kept / total) if total > 0 else 1.0, kept,
                          int(params[ks[0] - 1, ks[1] - 1]))
