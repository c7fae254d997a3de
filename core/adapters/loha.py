"""LoHa: ``mat(ΔW) = γ · (A1 B1) ⊙ (A2 B2)``; the Tucker variant builds each B from ``hada_t*``."""
from __future__ import annotations


from .base import Adapter, Exact, Product, extra_energy, gram_energy


def prefers_dense(out: int, in_: int, r1: int, r2: int) -> bool:
    """Khatri-Rao width R = r1·r2 gives no saving: dense when R >= min(out, in') or when the factored
    cost ``2(out + in')R²`` exceeds the dense cost ``out·in'·(2√R + min(out, in'))`` (docs/resize.md §3.2)."""
    from ..svd import loha_route
    return loha_route(out, in_, r1 * r2) == "dense"


class LoHa(Adapter):
    kind, name = "loha", "LoHa"
    resizable = True
    scale_roles = ("hada_w1_a",)
    required = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    def recognise(self, shapes):
        return "hada_w1_a" in shapes and "hada_t1" not in shapes

    def rank(self, shapes):
        return shapes["hada_w1_b"][0]

    def delta_shape(self, shapes):
        return (shapes["hada_w1_a"][0], shapes["hada_w1_b"][1])

    def terms(self, t):
        """The two Hadamard terms as (A (out, r), B (r, in'))."""
        return [(t["hada_w1_a"], t["hada_w1_b"].flatten(1)), (t["hada_w2_a"], t["hada_w2_b"].flatten(1))]

    def factors(self, t):
        from ..svd import khatri_rao_cols, khatri_rao_rows
        (A1, B1), (A2, B2) = self.terms(t)
        return Product(khatri_rao_rows(A1, A2), khatri_rao_cols(B1, B2), 1.0)

    def dense(self, t):
        (A1, B1), (A2, B2) = self.terms(t)
        return (A1 @ B1) * (A2 @ B2)

    def _dense_route(self, t) -> bool:
        (A1, B1), (A2, _) = self.terms(t)
        return prefers_dense(A1.shape[0], B1.shape[1], A1.shape[1], A2.shape[1])

    def energy(self, t, g):
        if self._dense_route(t):
            return g * g * float(self.dense(t).double().pow(2).sum()) + extra_energy(t)
        f = self.factors(t)
        return g * g * gram_energy(f.B, f.A) + extra_energy(t)

    def decompose(self, t):
        from ..svd import LazySVD, svd_dense, svd_product_lazy
        (A1, B1), _ = self.terms(t)
        rows, cols = A1.shape[0], B1.shape[1]
        if self._dense_route(t):
            return Exact(LazySVD.of(svd_dense(self.dense(t))), rows, cols)
        f = self.factors(t)
        return Exact(svd_product_lazy(f.B, f.A), rows, cols)


class TuckerLoHa(LoHa):
    kind, name = "loha_tucker", "Tucker LoHa"
    required = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t2")

    def recognise(self, shapes):
        return "hada_w1_a" in shapes and "hada_t1" in shapes

    def delta_shape(self, shapes):
        return (shapes["hada_w1_a"][1], shapes["hada_w1_b"][1], *shapes["hada_t1"][2:])

    def terms(self, t):
        from ..svd import tucker_rows
        return [(t["hada_w1_a"].T, tucker_rows(t["hada_t1"], t["hada_w1_b"])),
                (t["hada_w2_a"].T, tucker_rows(t["hada_t2"], t["hada_w2_b"]))]


