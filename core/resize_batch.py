"""Resize of same-shaped plain LoRA/LoCon modules as one batch (docs/resize.md §11.1).

Modules whose factors have the same shapes and stored dtypes are resized together: their raw bytes are read
straight into one stacked buffer and converted to float32 in one pass, one batched Cholesky/eigh call
(``svd.CholeskyBatch``) gives every spectrum, the rule picks each module's rank, and the kept factors of the
whole batch come from two batched GEMMs, checked and cast to the output dtype in one pass each.

A batch holds at most BATCH_BYTES of float32 factors: glibc serves larger requests with fresh mappings whose
every page faults on first touch, which costs more than the arithmetic. Modules the Cholesky route cannot
take (a rank-deficient or NaN/Inf factor) take the eigh route (``svd.gram_route_batched``), and a module
whose spectrum is not finite the one-module path, which names the bad tensor.
"""
from __future__ import annotations

import math

import torch

from . import adapters, svd
from .lora_file import LoraFile, Module
from .resize_module import (FP16_MAX, Decomposition, ModuleResult, Options, assess, finish, max_abs, needs_factors,
                            out_dtype, resize_module, why_not_resizable)
from .resize_rule import Rule

BATCH = 64               # modules per batch at most
BATCH_BYTES = 8 << 20    # float32 bytes of one batch's stacked up and down factors


def batch_key(m: Module, device: torch.device) -> tuple | None:
    """A key shared by modules that can be resized as one batch (plain LoRA/LoCon, tall-skinny factors on
    the CPU), or None."""
    if m.kind not in ("lora", "locon") or why_not_resizable(m) is not None:
        return None
    up, down = m.shapes["up"], m.shapes["down"]
    if up[1] != down[0] or not svd.uses_gram_route((up[0], up[1]), (down[0], math.prod(down[1:])), device):
        return None
    return up, down, m.dtypes["up"], m.dtypes["down"]


def work_units(lora: LoraFile, device: torch.device) -> list[list[int]]:
    """Module indices in work units, largest first: same-keyed modules in batches of at most BATCH modules
    and BATCH_BYTES, every other module alone."""
    groups: dict[tuple, list[int]] = {}
    units = []
    for i, m in enumerate(lora.modules):
        key = batch_key(m, device)
        if key is None:
            units.append(([i], 0))
            continue
        groups.setdefault(key, []).append(i)
    for (up, down, _, _), idx in groups.items():
        each = 4 * up[1] * (up[0] + math.prod(down[1:]))
        n = max(1, min(BATCH, BATCH_BYTES // each))
        units += [(idx[j:j + n], each * len(idx[j:j + n])) for j in range(0, len(idx), n)]
    return [u for u, _ in sorted(units, key=lambda u: -u[1])]


def _stack(lora: LoraFile, ms: list[Module], role: str, rows: int, cols: int) -> torch.Tensor:
    from .safetensors_file import DTYPES
    raw = torch.empty(len(ms), rows * cols, dtype=DTYPES[ms[0].dtypes[role]])
    for j, m in enumerate(ms):
        lora.store.read_into(m.roles[role], raw[j])
    return raw.view(len(ms), rows, cols).to(torch.float32)


def cuts_expected(rule: Rule, ranks: list, r: int) -> bool:
    """Whether most modules of a rank-r batch will lose directions, so that their eigenvectors are best
    computed with the eigenvalues in one call: rules relative to the module's own spectrum (sv_*) nearly
    always cut, a rank or rank cap below r always does; base-relative thresholds (fro_ckpt, recipe) often
    keep a module whole, which then needs the eigenvalues alone."""
    if rule.max_rank is not None and rule.max_rank < r:
        return True
    if ranks and all(k is not None for k in ranks):          # chosen ahead (a global rule)
        return 2 * sum(k < r for k in ranks) > len(ranks)
    if rule.mode == "rank":
        return float(rule.value) < r
    return rule.mode in ("sv_fro", "sv_ratio", "sv_cumulative")


def _decompositions(lora: LoraFile, ms: list[Module], B: torch.Tensor, A: torch.Tensor, vectors: bool):
    """(CholeskyBatch, which modules it took, each module's Decomposition or None where it needs the
    one-module path)."""
    cb = svd.CholeskyBatch(B, A, vectors)
    took = cb.ok.tolist()
    lazies: list = [cb.lazy(j) if ok else None for j, ok in enumerate(took)]
    bad = [j for j, x in enumerate(lazies) if x is None]
    if bad:
        try:
            sel = torch.tensor(bad)
            for j, x in zip(bad, svd.gram_route_batched(B[sel], A[sel])):
                lazies[j] = x
        except (RuntimeError, torch.linalg.LinAlgError):
            pass
    out = []
    for m, x, sure in zip(ms, lazies, took):     # what the Cholesky route took is finite
        g = lora.gamma(m)
        fine = x is not None and math.isfinite(g) and (sure or bool(torch.isfinite(x.S).all()))
        out.append(Decomposition(adapters.Exact(x, B.shape[1], A.shape[2]), g, {}) if fine else None)
    return cb, took, out


def _build(cb: svd.CholeskyBatch, todo: list, odt: torch.dtype) -> None:
    """The kept factors of every (j, d, k) in ``todo`` in two batched GEMMs, cast to ``odt`` and handed to
    each module's LazySVD; a module whose factors are not finite or overflow fp16 is left to ``cast``,
    which refuses it by name."""
    up, down = cb.factors([j for j, _, _ in todo], [k for _, _, k in todo])
    top = [max(a, b) for a, b in zip(max_abs(up), max_abs(down))]
    up, down = up.to(odt), down.to(odt)
    # every module's first k rows of down are views of the batch; up columns cut below kmax are not, so then
    # every up is copied and the batch's up storage is not held with unused columns
    cut = any(k < up.shape[-1] for _, _, k in todo)
    for i, ((_, d, k), t) in enumerate(zip(todo, top)):
        if math.isfinite(t) and (odt != torch.float16 or t <= FP16_MAX):
            u = up[i, :, :k].clone(memory_format=torch.contiguous_format) if cut else up[i]
            d.exact.svd.ready[k] = (u, down[i, :k])


def resize_batch(lora: LoraFile, ms: list[Module], rule: Rule, opts: Options, ranks: list, norms: list) -> list:
    """``resize_module`` for same-keyed modules (``batch_key``), ranks and base norms given per module."""
    up, down = ms[0].shapes["up"], ms[0].shapes["down"]
    B = _stack(lora, ms, "up", up[0], up[1])
    A = _stack(lora, ms, "down", down[0], math.prod(down[1:]))
    cb, took, ds = _decompositions(lora, ms, B, A, cuts_expected(rule, ranks, up[1]))
    results: list[ModuleResult | None] = [None] * len(ms)
    todo = []
    for j, (m, d) in enumerate(zip(ms, ds)):
        if d is None:
            results[j] = resize_module(lora, m, rule, opts, ranks[j], norms[j])
            continue
        res, k = assess(lora, m, rule, d, ranks[j], norms[j])
        if k is None:
            results[j] = res
        else:
            todo.append((j, m, d, res, k))
    build = [(j, d, k) for j, m, d, _, k in todo if took[j] and needs_factors(m, k)]
    if build:
        _build(cb, build, out_dtype(opts.dtype, ms[0]))
    for j, m, d, res, k in todo:
        results[j] = finish(lora, m, d, k, res, opts)
    return results
