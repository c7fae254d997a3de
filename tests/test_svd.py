"""core.svd against an independent oracle: torch.linalg.svd of the rebuilt ΔW in float64.

Singular vectors are never compared (sign/rotation ambiguity): only spectra and rebuilt
best rank-k deltas. LoHa/LoKr deltas come from LyCORIS's functional forward path when it is
installed (the scale-once path, not get_diff_weight, which double-scales; formats.md §2.14).
"""

import math

import pytest
import torch

from core.errors import ChopShopError
from core.svd import (
    CholeskyBatch,
    fold_tucker,
    khatri_rao_cols,
    khatri_rao_rows,
    kron_spectrum,
    loha_route,
    svd_dense,
    svd_kron,
    svd_product,
    svd_product_batched,
    tucker_rows,
)

try:
    from lycoris.functional import loha as lyco_loha
    from lycoris.functional import lokr as lyco_lokr
except Exception:  # not installed, or its imports fail
    lyco_loha = lyco_lokr = None

needs_lycoris = pytest.mark.skipif(
    lyco_loha is None, reason="lycoris-lora not installed (pip install --no-deps lycoris-lora==4.1.3 einops toml tqdm)"
)

SV_TOL = 1e-5  # max |Δσ| / σ_1
DELTA_TOL = 1e-4  # relative Frobenius error of the rebuilt rank-k delta


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, g, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def mat(delta):
    return delta.reshape(delta.shape[0], -1).to(torch.float64)


def best_rank_k(U, S, Vh, k):
    return (U[:, :k].double() * S[:k].double()) @ Vh[:k].double()


def assert_matches_oracle(svd, delta, ks=(1, 3), gamma=1.0):
    """svd = (U, S, Vh) of delta/γ; delta is the reference ΔW (any shape, γ included)."""
    U, S, Vh = svd
    assert U.dtype == S.dtype == Vh.dtype == torch.float32
    D = mat(delta)
    U_o, S_o, Vh_o = torch.linalg.svd(D, full_matrices=False)
    S = S.double() * gamma
    n = S.numel()
    assert bool((S[:-1] >= S[1:]).all()), "spectrum not descending"
    scale = max(float(S_o[0]), 1e-30)
    assert (S - S_o[:n]).abs().max() <= SV_TOL * scale
    beyond = float(S_o[n:].abs().sum())
    assert beyond <= SV_TOL * scale * max(1, S_o.numel() - n), "oracle has energy beyond the returned rank"
    for k in ks:
        k = min(k, n)
        want = best_rank_k(U_o, S_o, Vh_o, k)
        got = best_rank_k(U, S.float(), Vh, k)
        assert torch.linalg.norm(got - want) <= DELTA_TOL * max(float(torch.linalg.norm(want)), 1e-30)
    full = best_rank_k(U, S.float(), Vh, n)
    assert torch.linalg.norm(full - D) <= DELTA_TOL * max(float(torch.linalg.norm(D)), 1e-30)


# --- LoRA / LoCon ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, rank, down_tail",
    [
        (320, 8, (640,)),  # linear
        (96, 8, (64, 1, 1)),  # LoCon 1x1
        (48, 8, (32, 3, 3)),  # LoCon 3x3
        (40, 6, (16, 1, 3)),  # non-square kernel
        (24, 4, (16, 5)),  # Conv1d
        (20, 4, (8, 3, 3, 3)),  # Conv3d
        (6, 16, (40,)),  # rank above the min dimension (out)
        (64, 16, (3, 2, 2)),  # rank above in' = 12
    ],
)
def test_lora_locon(out, rank, down_tail):
    g = gen(out + rank)
    down = randn(rank, *down_tail, g=g)
    up = randn(out, rank, *([1] * (len(down_tail) - 1)), g=g, scale=0.1)
    gamma = 4.0 / rank
    delta = gamma * (up.reshape(out, -1).double() @ down.reshape(rank, -1).double())
    svd = svd_product(up.reshape(out, -1), down.reshape(rank, -1))
    assert svd[1].numel() == min(out, rank, math.prod(down_tail))
    assert_matches_oracle(svd, delta, gamma=gamma)


def test_half_precision_inputs_give_float32():
    g = gen(1)
    up, down = randn(64, 8, g=g).half(), randn(8, 32, g=g).bfloat16()
    svd = svd_product(up, down)
    assert_matches_oracle(svd, up.double() @ down.double())


def test_rank_deficient_factors():
    g = gen(2)
    up, down = randn(50, 8, g=g), randn(8, 70, g=g)
    up[:, 5:] = 0  # dead columns: rank 5
    down[2] = down[0] + down[1]  # a dependent row: rank 4
    U, S, Vh = svd_product(up, down)
    D = up.double() @ down.double()
    assert_matches_oracle((U, S, Vh), D, ks=(1, 4))
    assert S[4:].max() <= 1e-5 * S[0]


def test_all_zero():
    U, S, Vh = svd_product(torch.zeros(30, 4), torch.randn(4, 20))
    assert S.shape == (4,) and bool((S == 0).all())
    assert float(best_rank_k(U, S, Vh, 4).abs().max()) == 0.0
    assert bool((svd_dense(torch.zeros(7, 9))[1] == 0).all())


def test_wrong_shapes_raise():
    with pytest.raises(ChopShopError):
        svd_product(torch.randn(5, 3), torch.randn(4, 6))
    with pytest.raises(ChopShopError):
        svd_product_batched(torch.randn(5, 3), torch.randn(3, 6))


def test_batched_matches_single():
    g = gen(3)
    B, A = randn(5, 64, 6, g=g), randn(5, 6, 48, g=g)
    B[2] = 0  # one all-zero module in the stack
    U, S, Vh = svd_product_batched(B, A)
    assert U.shape == (5, 64, 6) and S.shape == (5, 6) and Vh.shape == (5, 6, 48)
    for i in range(5):
        assert_matches_oracle((U[i], S[i], Vh[i]), B[i].double() @ A[i].double())


@pytest.mark.parametrize("vectors", [True, False])
def test_cholesky_batch_matches_oracle(vectors):
    """Spectra, vectors and rank-k factors of the Cholesky route against float64 SVDs of each product,
    over factors from well-conditioned to cond(B) ~ 1e3, including kernels flattened into A; with the
    eigenvectors computed up front or only for the modules whose factors are asked for."""
    g = gen(4)
    N, m, r, n = 6, 200, 12, 150
    B, A = randn(N, m, r, g=g), randn(N, r, n, g=g)
    for i in range(N):   # column scales of B spanning up to 10^(i/2)
        B[i] *= torch.logspace(0, i / 2, r)[None, :]
    cb = CholeskyBatch(B, A, vectors)
    assert cb.ok.all() and (cb.W is None) != vectors
    for i in range(N):
        lazy = cb.lazy(i)
        U, Vh = lazy.vectors(r)
        assert_matches_oracle((U, lazy.S, Vh), B[i].double() @ A[i].double(), ks=(1, 5, 11))
    ks = [1, 3, 5, 7, 11, 12]
    up, down = cb.factors(list(range(N)), ks)
    assert up.shape == (N, m, 12) and down.shape == (N, 12, n)
    for i, k in enumerate(ks):
        D = B[i].double() @ A[i].double()
        U_o, S_o, Vh_o = torch.linalg.svd(D, full_matrices=False)
        want = best_rank_k(U_o, S_o, Vh_o, k)
        got = up[i].double() @ down[i].double()
        assert torch.linalg.norm(got - want) <= DELTA_TOL * float(torch.linalg.norm(want))
        assert bool((up[i, :, k:] == 0).all()) and bool((down[i, k:] == 0).all())
        # √σ on both sides: matching column / row norms
        assert torch.allclose(up[i, :, :k].norm(dim=0), down[i, :k].norm(dim=1), rtol=1e-4)
    sub_up, sub_down = cb.factors([4, 1], [3, 2])
    assert torch.allclose(sub_up[0], up[4, :, :3]) and torch.allclose(sub_down[1, :2], down[1, :2, :])


def test_cholesky_batch_refuses_what_it_cannot_do_exactly():
    """Rank-deficient, all-zero and NaN factors are not taken (the eigh route cuts their null directions
    to exact zeros; NaN is named by the caller); the rest of the stack is unaffected."""
    g = gen(5)
    B, A = randn(5, 64, 6, g=g), randn(5, 6, 48, g=g)
    B[1, :, 4:] = 0                   # dead columns
    A[2, 3] = A[2, 0] + A[2, 1]       # a dependent row
    B[3] = 0                          # all zero
    A[4, 0, 0] = float("nan")
    cb = CholeskyBatch(B, A)
    assert cb.ok.tolist() == [True, False, False, False, False]
    assert_matches_oracle((*cb.lazy(0).vectors(6)[:1], cb.lazy(0).S, cb.lazy(0).vectors(6)[1]),
                          B[0].double() @ A[0].double())


# --- Tucker LoCon ----------------------------------------------------------------------------


def comfy_fold(down, mid):
    """ComfyUI weight_adapter/lora.py's fold of lora_mid into lora_down (2-D kernels)."""
    final_shape = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
    return (
        torch.mm(down.transpose(0, 1).flatten(start_dim=1), mid.transpose(0, 1).flatten(start_dim=1))
        .reshape(final_shape)
        .transpose(0, 1)
    )


def test_fold_tucker_matches_comfyui():
    g = gen(4)
    down, mid = randn(6, 10, 1, 1, g=g).double(), randn(6, 6, 3, 2, g=g).double()
    M = fold_tucker(mid, down)
    assert M.shape == (6, 10 * 3 * 2)
    assert torch.allclose(M, comfy_fold(down, mid).reshape(6, -1), rtol=0, atol=1e-12)
    assert torch.allclose(fold_tucker(mid, down.reshape(6, 10)), M)
    with pytest.raises(ChopShopError):
        fold_tucker(mid, randn(6, 10, 3, 3, g=g))


@pytest.mark.parametrize("kernel", [(3, 3), (1, 5), (5,), (3, 3, 3)])
def test_tucker_locon(kernel):
    g = gen(len(kernel) * 10 + kernel[0])
    r, cin, out = 6, 12, 20
    ones = [1] * len(kernel)
    down, mid, up = randn(r, cin, *ones, g=g), randn(r, r, *kernel, g=g), randn(out, r, *ones, g=g)
    # independent element-wise definition (formats.md §2.3): ΔW[o,i,k] = Σ_p Σ_j up[o,p] mid[p,j,k] down[j,i]
    delta = torch.einsum("op,pj...,ji->oi...", up.reshape(out, r).double(), mid.double(), down.reshape(r, cin).double())
    gamma = 3.0 / r
    svd = svd_product(up.reshape(out, r), fold_tucker(mid, down))
    assert_matches_oracle(svd, gamma * delta, gamma=gamma)


# --- LoHa ------------------------------------------------------------------------------------


def test_khatri_rao_identity():
    g = gen(5)
    A1, B1, A2, B2 = randn(9, 3, g=g), randn(3, 11, g=g), randn(9, 4, g=g), randn(4, 11, g=g)
    lhs = (A1.double() @ B1.double()) * (A2.double() @ B2.double())
    rhs = khatri_rao_rows(A1.double(), A2.double()) @ khatri_rao_cols(B1.double(), B2.double())
    assert khatri_rao_rows(A1, A2).shape == (9, 12) and khatri_rao_cols(B1, B2).shape == (12, 11)
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-12)


def loha_delta(w1a, w1b, w2a, w2b, gamma, t1=None, t2=None):
    """Reference LoHa ΔW: LyCORIS functional forward path if available, else the definition."""
    if lyco_loha is not None:
        return lyco_loha.diff_weight(w1b.double(), w1a.double(), w2b.double(), w2a.double(),
                                     None if t1 is None else t1.double(), None if t2 is None else t2.double(),
                                     gamma=gamma, backend="torch")
    if t1 is None:
        return gamma * (w1a.double() @ w1b.double()) * (w2a.double() @ w2b.double())
    m1 = torch.einsum("ij...,jq,ip->pq...", t1.double(), w1b.double(), w1a.double())
    m2 = torch.einsum("ij...,jq,ip->pq...", t2.double(), w2b.double(), w2a.double())
    return gamma * m1 * m2


def loha_svd(route, A1, B1, A2, B2):
    if route == "factored":
        return svd_product(khatri_rao_rows(A1, A2), khatri_rao_cols(B1, B2))
    return svd_dense((A1 @ B1) * (A2 @ B2))


@pytest.mark.parametrize("route", ["factored", "dense"])
@pytest.mark.parametrize("out, r, in_", [(64, 3, 48), (40, 4, 8 * 9), (10, 4, 30)])
def test_loha_plain(route, out, r, in_):
    g = gen(out + r + in_)
    w1a, w1b, w2a, w2b = randn(out, r, g=g), randn(r, in_, g=g), randn(out, r, g=g), randn(r, in_, g=g)
    gamma = 2.0 / r
    delta = loha_delta(w1a, w1b, w2a, w2b, gamma)
    svd = loha_svd(route, w1a, w1b, w2a, w2b)
    assert_matches_oracle(svd, delta, gamma=gamma)


@pytest.mark.parametrize("route", ["factored", "dense"])
@pytest.mark.parametrize("kernel", [(3, 3), (1, 3), (3,)])
def test_loha_tucker(route, kernel):
    g = gen(20 + len(kernel) + kernel[0])
    r, out, cin = 3, 24, 10
    w1a, w1b, w2a, w2b = randn(r, out, g=g), randn(r, cin, g=g), randn(r, out, g=g), randn(r, cin, g=g)
    t1, t2 = randn(r, r, *kernel, g=g), randn(r, r, *kernel, g=g)
    gamma = 1.5 / r
    delta = loha_delta(w1a, w1b, w2a, w2b, gamma, t1, t2)
    assert delta.shape == (out, cin, *kernel)
    svd = loha_svd(route, w1a.T, tucker_rows(t1, w1b), w2a.T, tucker_rows(t2, w2b))
    assert_matches_oracle(svd, delta, gamma=gamma)


def test_loha_route():
    assert loha_route(1280, 1280, 16 * 16) == "factored"
    assert loha_route(640, 640, 32 * 32) == "dense"  # R >= min dim
    assert loha_route(1280, 1280, 1000) == "dense"  # factored cost above dense
    assert loha_route(1280, 11520, 64) == "factored"


# --- LoKr ------------------------------------------------------------------------------------


def lokr_delta(w1, w1a, w1b, w2, w2a, w2b, t2, gamma):
    """Reference LoKr ΔW = γ·kron(w1, w2) (w1 gets trailing singleton dims for conv w2)."""
    d = lambda x: None if x is None else x.double()  # noqa: E731
    if lyco_lokr is not None:
        return lyco_lokr.kron_weight(d(w1), d(w1a), d(w1b), d(w2), d(w2a), d(w2b), d(t2), scale=gamma, backend="torch")
    w1 = d(w1) if w1 is not None else d(w1a) @ d(w1b)
    if w2 is None:
        if t2 is not None:
            w2 = torch.einsum("ij...,ip,jq->pq...", d(t2), d(w2a), d(w2b))
        else:
            w2 = (d(w2a) @ d(w2b).reshape(w2b.shape[0], -1)).reshape(w2a.shape[0], *w2b.shape[1:])
    w1 = w1.reshape(*w1.shape, *([1] * (w2.ndim - 2)))
    return gamma * torch.kron(w1, w2.contiguous())  # torch.kron rejects non-contiguous einsum outputs


def lokr_cases():
    g = gen(30)
    a, c, b, d, r = 4, 6, 10, 12, 3
    return {
        "full_w1+decomposed_w2": dict(w1=randn(a, c, g=g), w2a=randn(b, r, g=g), w2b=randn(r, d, g=g)),
        "decomposed_both": dict(w1a=randn(a, 2, g=g), w1b=randn(2, c, g=g), w2a=randn(b, r, g=g), w2b=randn(r, d, g=g)),
        "full_both": dict(w1=randn(a, c, g=g), w2=randn(b, d, g=g)),
        "tucker_w2": dict(w1=randn(a, c, g=g), w2a=randn(r, b, g=g), w2b=randn(r, d, g=g), t2=randn(r, r, 3, 3, g=g)),
        "conv_full_w2": dict(w1=randn(a, c, g=g), w2=randn(b, d, 3, 3, g=g)),
        "conv_decomposed_w2": dict(w1=randn(a, c, g=g), w2a=randn(b, r, g=g), w2b=randn(r, d, 1, 3, g=g)),
        "rank_above_factor_dims": dict(w1=randn(2, 3, g=g), w2a=randn(5, 8, g=g), w2b=randn(8, 4, g=g)),
    }


def factor_svd(full, fa, fb, t=None):
    if full is not None:
        return svd_dense(full)
    if t is not None:
        return svd_product(fa.T, tucker_rows(t, fb))
    return svd_product(fa, fb.reshape(fb.shape[0], -1))


@pytest.mark.parametrize("case", list(lokr_cases()))
def test_lokr(case):
    f = {key: None for key in ("w1", "w1a", "w1b", "w2", "w2a", "w2b", "t2")} | lokr_cases()[case]
    gamma = 1.0 if f["w1"] is not None and f["w2"] is not None else 2.0 / 3.0
    delta = lokr_delta(f["w1"], f["w1a"], f["w1b"], f["w2"], f["w2a"], f["w2b"], f["t2"], gamma)
    svd1 = factor_svd(f["w1"], f["w1a"], f["w1b"])
    svd2 = factor_svd(f["w2"], f["w2a"], f["w2b"], f["t2"])
    n = svd1[1].numel() * svd2[1].numel()
    assert_matches_oracle(svd_kron(svd1, svd2, n), delta, gamma=gamma)
    top = svd_kron(svd1, svd2, 5)
    assert top[0].shape == (delta.shape[0], 5) and top[2].shape == (5, mat(delta).shape[1])
    want = torch.linalg.svdvals(mat(delta)) / gamma
    assert torch.allclose(kron_spectrum(svd1[1], svd2[1]).double(), want[:n], atol=SV_TOL * float(want[0]))
    k = 4  # rebuilt best rank-4 from the top-4 triplets only
    U_o, S_o, Vh_o = torch.linalg.svd(mat(delta), full_matrices=False)
    got = best_rank_k(*svd_kron(svd1, svd2, k), k) * gamma
    want_k = best_rank_k(U_o, S_o, Vh_o, k)
    assert torch.linalg.norm(got - want_k) <= DELTA_TOL * torch.linalg.norm(want_k)


def test_svd_kron_clamps_k():
    s1, s2 = svd_dense(torch.randn(2, 3)), svd_dense(torch.randn(3, 2))
    U, S, Vh = svd_kron(s1, s2, 100)
    assert S.numel() == 4 and U.shape == (6, 4) and Vh.shape == (4, 6)


# --- dense diffs -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 90), (90, 40), (16, 8, 3, 3)])
def test_svd_dense_orientations(shape):
    D = torch.randn(*shape, generator=gen(sum(shape)))
    svd = svd_dense(D)
    assert svd[1].numel() == min(shape[0], math.prod(shape[1:]))
    assert_matches_oracle(svd, D.double())


def test_svd_dense_randomized_exact_for_low_rank():
    g = gen(7)
    D = randn(300, 6, g=g) @ randn(6, 500, g=g)
    U, S, Vh = svd_dense(D, randomized=12, niter=2)
    assert S.numel() == 12
    assert_matches_oracle((U[:, :6], S[:6], Vh[:6]), D.double(), ks=(1, 6))
    with pytest.raises(ChopShopError):
        svd_dense(D, randomized=0)


# --- LyCORIS oracle sanity: functional path == module forward (scale applied once) ------------


@needs_lycoris
def test_lycoris_functional_oracle_scales_once():
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    g = gen(8)
    out, cin, r, alpha = 12, 10, 4, 2.0
    gamma = alpha / r
    x = torch.eye(cin)
    base = torch.nn.Linear(cin, out, bias=False)
    w1a, w1b, w2a, w2b = randn(out, r, g=g), randn(r, cin, g=g), randn(out, r, g=g), randn(r, cin, g=g)
    with torch.no_grad():
        loha = LohaModule.make_module_from_state_dict(
            "m", base, w1a, w1b, w2a, w2b, None, None, torch.tensor(alpha), None
        )
        forward_delta = (loha(x) - base(x)).T  # rows of ΔW
    assert torch.allclose(forward_delta.double(), loha_delta(w1a, w1b, w2a, w2b, gamma), rtol=1e-5, atol=1e-5)

    w1 = randn(3, 2, g=g)
    w2a, w2b = randn(4, 2, g=g), randn(2, 5, g=g)
    base = torch.nn.Linear(10, 12, bias=False)
    with torch.no_grad():
        lokr = LokrModule.make_module_from_state_dict(
            "m", base, w1, None, None, None, w2a, w2b, None, None, torch.tensor(1.0), None
        )
        forward_delta = (lokr(torch.eye(10)) - base(torch.eye(10))).T
    want = lokr_delta(w1, None, None, None, w2a, w2b, None, 1.0 / 2)
    assert torch.allclose(forward_delta.double(), want, rtol=1e-5, atol=1e-5)
