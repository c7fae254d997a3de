"""Exact thin SVDs of a module's ΔW, computed from its factors (docs/resize.md §1-§3).

Every function returns a thin SVD ``(U, S, Vh)`` in float32 with ``S`` descending and
``U @ diag(S) @ Vh`` equal to the (unscaled) product the factors describe; the module's
scale γ is the caller's business. Small core products are done in float64 (float32 on MPS,
which has no float64). Work happens on the inputs' device; nothing here picks a device.

Shapes: ``m`` = out, ``n`` = in' = in·kh·kw (flattened), ``r`` = factor rank.
"""

from __future__ import annotations

import math

import torch

from .errors import ChopShopError

SVD = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.to(torch.float32)


def _core_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _qr_route(B: torch.Tensor, A: torch.Tensor) -> SVD:
    """QR route on (..., m, r) @ (..., r, n); leading batch dims pass through."""
    B, A = _f32(B), _f32(A)
    Q_B, R_B = torch.linalg.qr(B, mode="reduced")  # (..., m, p), (..., p, r)
    Q_A, R_A = torch.linalg.qr(A.mT, mode="reduced")  # (..., n, q), (..., q, r)
    core_dtype = _core_dtype(B.device)
    core = R_B.to(core_dtype) @ R_A.to(core_dtype).mT  # (..., p, q), at most r x r
    U_c, S, Vh_c = torch.linalg.svd(core, full_matrices=False)
    U = Q_B @ U_c.to(torch.float32)
    Vh = Vh_c.to(torch.float32) @ Q_A.mT
    return U, S.to(torch.float32), Vh


class LazySVD:
    """A thin SVD whose singular values are known and whose top-k vectors are built only when asked
    (``vectors(k) -> (U (m, k), Vh (k, n))``): a resize needs S for every module but vectors only for the
    k directions it keeps."""

    def __init__(self, S: torch.Tensor, vectors, factors=None, balanced: bool = True):
        self.S = S
        self._vectors = vectors
        self._factors = factors
        self.balanced = balanced     # True: no factor entry exceeds √σ_1 (the cast may skip its range pass)
        self.ready: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # k -> factors a batch already built

    def vectors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._vectors(k)

    def factors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U_k·diag(√S_k) (m, k), diag(√S_k)·Vh_k (k, n))``: the rank-k LoRA factors, with √S folded
        into the small core where the route allows (one pass over the big factors fewer). Factors a batch
        built ahead (``ready``, already in the output dtype) are handed out as they are."""
        if k in self.ready:
            return self.ready.pop(k)
        if self._factors is not None:
            return self._factors(k)
        U, Vh = self._vectors(k)
        sq = self.S[:U.shape[1]].sqrt()
        return U * sq[None, :], sq[:, None] * Vh

    @staticmethod
    def of(svd: SVD) -> "LazySVD":
        U, S, Vh = svd
        return LazySVD(S, lambda k: (U[:, :k], Vh[:k]))


def _gram_roots(G: torch.Tensor, cd: torch.dtype):
    """G = P diag(lam) Pᵀ (..., r, r) -> (R = diag(√lam) Pᵀ, pseudo-inverse lift P diag(1/√lam))."""
    lam, P = torch.linalg.eigh(G.to(cd))
    sq = lam.clamp_min(0).sqrt()
    tol = sq.amax(-1, keepdim=True) * 4e-4 if sq.numel() else sq.new_zeros(())  # ~ sqrt(float32 eps)
    inv = torch.where(sq > tol, 1 / sq.clamp_min(torch.finfo(cd).tiny), torch.zeros_like(sq))
    return sq[..., :, None] * P.mT, P * inv[..., None, :]


def gram_route_batched(B: torch.Tensor, A: torch.Tensor) -> list[LazySVD]:
    """Gram route on a stack of same-shaped modules, B (N, m, r), A (N, r, n): the r x r Gram matrices
    BᵀB and AAᵀ (GEMMs, far faster than Householder QR on tall-skinny factors) give square roots R_B, R_A
    with R_Bᵀ R_B = BᵀB; the SVD of the small core R_B R_Aᵀ (float64) then lifts back through their
    pseudo-inverses, for the kept vectors only. One batched eigh/SVD call serves all N modules.
    Directions whose Gram eigenvalue is numerically zero carry a zero singular value."""
    cd = _core_dtype(B.device)
    R_B, lift_B = _gram_roots(B.mT @ B, cd)
    R_A, lift_A = _gram_roots(A @ A.mT, cd)
    U_c, S, Vh_c = torch.linalg.svd(R_B @ R_A.mT, full_matrices=False)
    n = min(B.shape[-2], A.shape[-1], B.shape[-1])
    S = S[..., :n].to(torch.float32)

    def lazy(i: int) -> LazySVD:
        def vectors(k: int, scale: bool = False):
            k = min(k, n)
            left, right = lift_B[i] @ U_c[i, :, :k], Vh_c[i, :k] @ lift_A[i].mT     # (r, k), (k, r)
            if scale:
                sq = S[i, :k].to(left.dtype).sqrt()
                left, right = left * sq[None, :], sq[:, None] * right
            return B[i] @ left.to(B.dtype), right.to(A.dtype) @ A[i]
        return LazySVD(S[i], vectors, lambda k: vectors(k, True))
    return [lazy(i) for i in range(B.shape[0])]


GRAM_TOL = 4e-4 ** 2   # a Gram eigenvalue below GRAM_TOL·λ_max is numerically zero (``_gram_roots``' cut)


def _cholesky(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ok (N,), L, L⁻¹) for a stack of Gram matrices G = L Lᵀ: ok where the factor exists and proves
    λ_min(G) > GRAM_TOL·λ_max(G) (λ_min ≥ 1/‖L⁻¹‖_F², λ_max ≤ tr G), i.e. where ``_gram_roots`` would cut
    no direction. NaN/Inf in G fail the test (every comparison with NaN is False)."""
    L, info = torch.linalg.cholesky_ex(G)
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device).expand_as(G)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    bound = (Linv * Linv).sum((-2, -1)) * G.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (info == 0) & (bound * GRAM_TOL < 1), L, Linv


class CholeskyBatch:
    """Thin SVDs of N same-shaped products B (N, m, r) @ A (N, r, n) (float32) by Cholesky: with the r x r
    Gram matrices G_B = BᵀB = L Lᵀ and G_A = AAᵀ, ``M = Lᵀ G_A L = W diag(S²) Wᵀ`` (float64) gives
    the singular values S, the left vectors ``U = B L⁻ᵀ W`` and the rank-k factors ``up = B·L⁻ᵀ W_k √S_k``,
    ``down = S_k^(-1/2) W_kᵀ Lᵀ·A`` (U_k U_kᵀ ΔW: the best rank-k approximation, √σ on both sides).
    The same Gram matrices as ``gram_route_batched``, a cheaper core: two Cholesky factorizations and one
    symmetric eigenproblem instead of two eigh and an SVD. With ``vectors=False`` S comes from the eigenvalues
    alone (a third of eigh's cost) and W is computed only for the modules whose factors are asked for, which
    pays where most modules are kept whole; ``vectors=True`` computes W for all at once. ``ok[i]`` is False
    where a Gram matrix is not safely definite (a rank-deficient factor, NaN/Inf): those modules need
    ``gram_route_batched``, which cuts such directions to exact zeros."""

    def __init__(self, B: torch.Tensor, A: torch.Tensor, vectors: bool = True):
        cd = _core_dtype(B.device)
        self.B, self.A = B, A
        G_B, G_A = (B.mT @ B).to(cd), (A @ A.mT).to(cd)
        ok_b, self.L, self.Linv = _cholesky(G_B)
        self.ok = ok_b & _cholesky(G_A)[0]
        eye = torch.eye(B.shape[-1], dtype=cd, device=B.device)
        M = self.L.mT @ G_A @ self.L
        self.M = torch.where(self.ok[:, None, None], M + M.mT, 2 * eye) / 2    # (N, r, r), symmetric
        if vectors:
            lam, W = torch.linalg.eigh(self.M)
            self.W: torch.Tensor | None = W.flip(-1)
        else:
            lam, self.W = torch.linalg.eigvalsh(self.M), None
        self.S = lam.flip(-1).clamp_min(0).sqrt()
        self.S32 = self.S.to(torch.float32)

    def eigenvectors(self, sel) -> torch.Tensor:
        """W of the modules ``sel`` (an index tensor or a slice), columns in descending eigenvalue order."""
        return self.W[sel] if self.W is not None else torch.linalg.eigh(self.M[sel])[1].flip(-1)

    def factors(self, idx: list[int], ks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank-k_i factors of modules ``idx``, stacked at kmax = max(ks) (columns/rows past k_i are 0):
        up (len(idx), m, kmax), down (len(idx), kmax, n), float32."""
        kmax = max(ks)
        every = len(idx) == self.B.shape[0] and idx == list(range(len(idx)))
        sel = slice(None) if every else torch.tensor(idx)
        S, W = self.S[sel, :kmax], self.eigenvectors(sel)[:, :, :kmax]
        keep = torch.arange(kmax) < torch.tensor(ks)[:, None]
        sq = S.sqrt()
        right = torch.where(keep, 1 / torch.where(keep, sq, torch.ones_like(sq)), torch.zeros_like(sq))
        X = self.Linv[sel].mT @ (W * torch.where(keep, sq, torch.zeros_like(sq))[:, None, :])   # (N, r, kmax)
        Y = (W * right[:, None, :]).mT @ self.L[sel].mT                                       # (N, kmax, r)
        B, A = (self.B, self.A) if every else (self.B[sel], self.A[sel])
        return B @ X.to(B.dtype), Y.to(A.dtype) @ A

    def lazy(self, j: int) -> LazySVD:
        """Module j's thin SVD: S (float32), vectors and factors on demand (one module's GEMMs)."""
        def vectors(k: int):
            W = self.eigenvectors(slice(j, j + 1))[0, :, :k]
            U = self.B[j] @ (self.Linv[j].mT @ W).to(self.B.dtype)
            return U, ((W / self.S[j, :k]).mT @ self.L[j].mT).to(self.A.dtype) @ self.A[j]

        def factors(k: int):
            up, down = self.factors([j], [k])
            return up[0], down[0]
        return LazySVD(self.S32[j], vectors, factors, balanced=False)


def _gram_route(B: torch.Tensor, A: torch.Tensor) -> LazySVD:
    """The Gram route for one module, B (m, r), A (r, n) (see ``gram_route_batched``)."""
    return gram_route_batched(B[None], A[None])[0]


def uses_gram_route(B_shape, A_shape, device: torch.device) -> bool:
    return device.type == "cpu" and min(B_shape[0], A_shape[1]) >= 2 * B_shape[1]


def svd_product_lazy(B: torch.Tensor, A: torch.Tensor) -> LazySVD:
    """``svd_product`` whose vectors are built on demand (the Gram route on CPU for tall-skinny factors)."""
    if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ChopShopError(f"svd_product needs B (m, r) and A (r, n); got {tuple(B.shape)} and {tuple(A.shape)}")
    if uses_gram_route(B.shape, A.shape, B.device):
        return _gram_route(_f32(B), _f32(A))
    return LazySVD.of(_qr_route(B, A))


def svd_product(B: torch.Tensor, A: torch.Tensor) -> SVD:
    """Thin SVD of ``B @ A`` without forming it (the QR route, docs/resize.md §1).

    B (m, r), A (r, n) -> U (m, k), S (k,), Vh (k, n), with k = min(m, n, r).
    Rank-deficient factors simply give trailing zeros in S.
    """
    if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ChopShopError(f"svd_product needs B (m, r) and A (r, n); got {tuple(B.shape)} and {tuple(A.shape)}")
    return _qr_route(B, A)


def svd_product_batched(B: torch.Tensor, A: torch.Tensor) -> SVD:
    """svd_product over a stack of same-shaped modules in one call.

    B (N, m, r), A (N, r, n) -> U (N, m, k), S (N, k), Vh (N, k, n), k = min(m, n, r).
    """
    if B.ndim != 3 or A.ndim != 3 or B.shape[0] != A.shape[0] or B.shape[2] != A.shape[1]:
        raise ChopShopError(
            f"svd_product_batched needs B (N, m, r) and A (N, r, n); got {tuple(B.shape)} and {tuple(A.shape)}"
        )
    return _qr_route(B, A)


def svd_dense(D: torch.Tensor, randomized: int | None = None, niter: int = 2) -> SVD:
    """Thin SVD of a dense matrix (full diffs, dense LoHa route; docs/resize.md §3.4).

    D (m, n) (a conv delta is flattened to (out, in·kh·kw)) -> U (m, k), S (k,), Vh (k, n).
    Exact: k = min(m, n); the tall orientation is decomposed (D is transposed when m < n),
    which is several times faster on CPU. ``randomized=q`` uses ``torch.svd_lowrank(D, q, niter)``
    instead, k = min(q, m, n): approximate, for huge diffs where only the top directions matter.
    """
    D = _f32(D.reshape(D.shape[0], -1))
    m, n = D.shape
    if randomized is not None:
        if randomized < 1:
            raise ChopShopError(f"randomized SVD needs q >= 1, got {randomized}")
        U, S, V = torch.svd_lowrank(D, q=min(randomized, m, n), niter=niter)
        return U, S, V.mT
    if m < n:
        U_t, S, Vh_t = torch.linalg.svd(D.mT, full_matrices=False)
        return Vh_t.mT, S, U_t.mT
    return torch.linalg.svd(D, full_matrices=False)


def khatri_rao_rows(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """Row-wise Khatri-Rao (face-splitting) product: row o is kron(A1[o], A2[o]).

    A1 (m, r1), A2 (m, r2) -> (m, r1·r2). With khatri_rao_cols:
    (A1 @ B1) * (A2 @ B2) == khatri_rao_rows(A1, A2) @ khatri_rao_cols(B1, B2)  (docs/resize.md §3.2).
    """
    return (A1[:, :, None] * A2[:, None, :]).reshape(A1.shape[0], -1)


def khatri_rao_cols(B1: torch.Tensor, B2: torch.Tensor) -> torch.Tensor:
    """Column-wise Khatri-Rao product: column j is kron(B1[:, j], B2[:, j]).

    B1 (r1, n), B2 (r2, n) -> (r1·r2, n).
    """
    return (B1[:, None, :] * B2[None, :, :]).reshape(-1, B1.shape[1])


def tucker_rows(t: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
    """Right factor of a Tucker term: out[i, (q, *k)] = Σ_j t[i, j, *k] · w_b[j, q].

    t (r, r2, *kernel), w_b (r2, q) -> (r, q·prod(kernel)). Row-major (q, kh, kw) order matches
    the flattened conv delta. Used for Tucker LoHa/LoKr (ΔW term = w_aᵀ @ tucker_rows(t, w_b)).
    """
    if t.ndim < 2 or w_b.ndim != 2 or t.shape[1] != w_b.shape[0]:
        raise ChopShopError(
            f"tucker_rows needs t (r, r2, ...) and w_b (r2, q); got {tuple(t.shape)}, {tuple(w_b.shape)}"
        )
    return torch.einsum("ij...,jq->iq...", t, w_b).reshape(t.shape[0], -1)


def fold_tucker(mid: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Effective down of a Tucker LoCon (lora_mid folded in, ComfyUI's order; docs/resize.md §3.1).

    mid (r, r, *kernel) (Conv1d/2d/3d), down (r, in, 1, ...) or (r, in) -> M (r, in·prod(kernel)),
    M[p, (i, *k)] = Σ_j mid[p, j, *k] · down[j, i], so mat(ΔW) = mat(up) @ M.
    """
    if down.ndim > 2 and math.prod(down.shape[2:]) != 1:
        raise ChopShopError(f"Tucker lora_down must be 1x1, got shape {tuple(down.shape)}")
    return tucker_rows(mid, down.reshape(down.shape[0], -1))


def svd_kron(svd1: SVD, svd2: SVD, k: int) -> SVD:
    """Top-k singular triplets of kron(W1, W2) from thin SVDs of its factors (docs/resize.md §3.3).

    svd1 of W1 (a, c): U1 (a, n1), S1 (n1,), Vh1 (n1, c); svd2 of W2 (b, d): U2 (b, n2), S2, Vh2 (n2, d).
    Returns U (a·b, k), S (k,), Vh (k, c·d) with k clamped to n1·n2: the largest products
    S1[i]·S2[j], vectors kron(u1_i, u2_j) and kron(v1_i, v2_j). Ties are broken arbitrarily.
    """
    U1, S1, Vh1 = svd1
    U2, S2, Vh2 = svd2
    grid = (S1[:, None] * S2[None, :]).reshape(-1)
    k = max(0, min(int(k), grid.numel()))
    S, flat = torch.topk(grid, k, sorted=True)
    i, j = flat // S2.numel(), flat % S2.numel()
    U = (U1[:, i][:, None, :] * U2[:, j][None, :, :]).reshape(U1.shape[0] * U2.shape[0], k)
    Vh = (Vh1[i][:, :, None] * Vh2[j][:, None, :]).reshape(k, Vh1.shape[1] * Vh2.shape[1])
    return U, S, Vh


def kron_spectrum(S1: torch.Tensor, S2: torch.Tensor) -> torch.Tensor:
    """All singular values of kron(W1, W2): S1 (n1,), S2 (n2,) -> (n1·n2,) sorted descending."""
    return torch.sort((S1[:, None] * S2[None, :]).reshape(-1), descending=True).values


def loha_route(out: int, in_: int, R: int, dense_constant: float = 1.0) -> str:
    """"factored" (Khatri-Rao + QR route) or "dense" (Hadamard product + thin SVD) for a LoHa.

    R = r1·r2 is the Khatri-Rao width, in_ = in' (kernel included). Dense when R >= min(out, in_)
    (no saving possible) or when the factored cost 2·(out + in_)·R² exceeds the dense cost
    out·in_·(2·√R + c·min(out, in_)) (docs/resize.md §3.2). c = 1 puts the crossover near
    R ≈ min(out, in_)/2 for square layers; it is a flop estimate, not a measurement.
    """
    small = min(out, in_)
    if R >= small:
        return "dense"
    factored = 2.0 * (out + in_) * R * R
    dense = out * in_ * (2.0 * math.sqrt(R) + dense_constant * small)
    return "dense" if factored > dense else "factored"
