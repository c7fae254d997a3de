"""Independent oracles for the tests, written from the specifications, not from the code under test.

* ``chop_blocks_kept``: the keys chop_blocks.py (elias-gaeros/resize_lora HEAD) keeps for a 0/1 vector, per its
  documented rule (blocks.md §1.2, §1.5): one full-match regular expression on kohya UNet names, blocks sorted as
  (section, index string), weight = global x w_i, |w| < 1e-6 drops every key of the block.
* ``dense_delta``: ΔW of one module rebuilt from raw tensors with the formulas of formats.md §2, the way ComfyUI
  applies them (float64).
* ``best_rank_k``: Eckart-Young truncation by a dense SVD.
"""
from __future__ import annotations

import re

import torch

_CHOP_BLOCKS_RE = re.compile(
    r"lora_unet_(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks)(?:_(\d+))?_attentions_(\d+)_.*"
    r"|lora_unet_(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks)_(\d+)_.*")


def chop_blocks_block(key: str) -> tuple[str, str] | None:
    """(section, index string) as chop_blocks HEAD assigns it, or None for pass-through."""
    m = _CHOP_BLOCKS_RE.fullmatch(key)
    if not m:
        return None
    if m.group(1):
        return m.group(1), (m.group(2) or "") + m.group(3)
    return m.group(4), m.group(5)


def chop_blocks_layout(keys) -> list[tuple[str, str]]:
    return sorted({b for k in keys if (b := chop_blocks_block(k)) is not None})


def chop_blocks_kept(keys, vector: str) -> set[str]:
    nums = [float(x) for x in vector.split(",")]
    g, ws = nums[0], nums[1:]
    layout = chop_blocks_layout(keys)
    assert len(ws) == len(layout), f"chop_blocks would refuse: expected {len(layout)} weights, got {len(ws)}"
    weight = {b: g * w for b, w in zip(layout, ws)}
    return {k for k in keys if (b := chop_blocks_block(k)) is None or abs(weight[b]) >= 1e-6}


def _mat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def dense_delta(t: dict[str, torch.Tensor], suffix_of=None) -> torch.Tensor:
    """mat(ΔW) of a module from its tensors keyed by role suffix ('lora_up.weight', 'hada_w1_a', ...)."""
    g = lambda k: t[k].double()  # noqa: E731
    alpha = float(t["alpha"]) if "alpha" in t else None
    if "lora_up.weight" in t:
        up, down = g("lora_up.weight"), g("lora_down.weight")
        r = down.shape[0]
        if "lora_mid.weight" in t:
            mid = g("lora_mid.weight")
            # ΔW[o,i,h,w] = Σ_p Σ_j up[o,p] mid[p,j,h,w] down[j,i]
            d = torch.einsum("op,pjhw,ji->oihw", up.reshape(up.shape[0], -1), mid, down.reshape(r, -1))
        else:
            d = _mat(up) @ _mat(down)
        return (alpha / r if alpha is not None else 1.0) * _mat(d)
    if "lora_B.weight" in t:
        up, down = g("lora_B.weight"), g("lora_A.weight")
        return (alpha / down.shape[0] if alpha is not None else 1.0) * (_mat(up) @ _mat(down))
    if "hada_w1_a" in t:
        r = t["hada_w1_b"].shape[0]
        if "hada_t1" in t:
            def term(i):
                return torch.einsum("ijhw,jq,ip->pqhw", g(f"hada_t{i}"), g(f"hada_w{i}_b"), g(f"hada_w{i}_a"))
            d = _mat(term(1) * term(2))
        else:
            d = (g("hada_w1_a") @ g("hada_w1_b")) * (g("hada_w2_a") @ g("hada_w2_b"))
        return (alpha / r if alpha is not None else 1.0) * d
    if any(k.startswith("lokr_") for k in t):
        w1 = g("lokr_w1") if "lokr_w1" in t else g("lokr_w1_a") @ g("lokr_w1_b")
        w2 = _mat(g("lokr_w2")) if "lokr_w2" in t else g("lokr_w2_a") @ g("lokr_w2_b")
        dim = None
        if "lokr_w1_b" in t:
            dim = t["lokr_w1_b"].shape[0]
        if "lokr_w2_b" in t:
            dim = t["lokr_w2_b"].shape[0]
        gamma = alpha / dim if (alpha is not None and dim is not None) else 1.0
        return gamma * torch.kron(w1, w2)
    if "diff" in t:
        return _mat(g("diff"))
    raise ValueError(f"no oracle for {sorted(t)}")


def best_rank_k(D: torch.Tensor, k: int) -> torch.Tensor:
    """Eckart-Young by a dense SVD (of the tall orientation, which LAPACK handles much faster)."""
    if D.shape[0] < D.shape[1]:
        return best_rank_k(D.T, k).T
    U, S, Vh = torch.linalg.svd(D.double(), full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    denom = float(torch.linalg.norm(b.double()))
    return float(torch.linalg.norm(a.double() - b.double())) / (denom if denom > 0 else 1.0)
