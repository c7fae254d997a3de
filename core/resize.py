"""SVD Resize: plan -> apply -> report (docs/resize.md).

``plan`` checks the rule against the file and the base model, reads the base norms once and, for global
rules (size, recipe with size=), decomposes every module to choose all ranks together. ``apply`` resizes
same-shaped LoRA/LoCon modules in batches (``resize_batch``) and every other module alone
(``resize_module.resize_module``), on both CPU cores, keeping peak memory near two batches (8 MiB of float32
factors each) besides the output. Nothing is written until every module succeeded; the input is never modified.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import rank_rules
from .base_model import BaseWeights, from_file
from .errors import ChopShopError
from .lora_file import LoraFile, Module, Problem, TensorStore, read
from .module_checks import alpha_problem, raw_nonfinite
from .resize_batch import batch_key, resize_batch, work_units
from .resize_module import Options, decompose, out_dtype, resize_module, why_not_resizable
from .resize_report import ResizeReport, render_report
from .resize_rule import Rule
from .save import default_output, save_store, with_provenance
from .threads import cpu_threads

__all__ = ["Rule", "resize", "resize_file", "render_report", "plan", "ResizePlan", "resolve_device"]


@dataclass
class ResizePlan:
    rule: Rule
    todo: list[Module]
    ranks: dict[str, int] = field(default_factory=dict)           # chosen by a global rule
    base_norms: dict[str, tuple] = field(default_factory=dict)    # module -> (‖W0‖_F, σ_max(W0))
    warnings: list[str] = field(default_factory=list)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A usable torch device, or one clear error naming what this torch build offers."""
    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ChopShopError(f"unknown device {device!r}; use cpu, cuda or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(dev.type, False):
        have = ", ".join(k for k, v in available.items() if v)
        raise ChopShopError(f"device {device!r} is not available in this torch build; available: {have}")
    return dev


def _check_base(lora: LoraFile, rule: Rule, base: BaseWeights | None, todo: list[Module], p: ResizePlan) -> None:
    if not rule.needs_base:
        return
    if base is None:
        raise ChopShopError(f"rule {rule.describe()} needs the base model's weights (--base CKPT)")
    unmapped = [m.base for m in todo if m.target is None]
    if unmapped:
        raise ChopShopError(f"{len(unmapped)} modules have no known base layer, so {rule.mode} cannot score "
                            f"them (e.g. {', '.join(unmapped[:3])})")
    norms = base.norms([m.target for m in todo], lora.architecture, spectral="spectral" in rule.base_terms)
    for m in todo:
        fro, spn = norms[(m.target.key, m.target.slice)]
        p.base_norms[m.base] = (fro, spn)
        if not (fro is not None and math.isfinite(fro) and fro > 0):
            p.warnings.append(f"{m.base}: its base layer {m.target.key} is all zero or holds NaN/Inf "
                              f"(‖W0‖_F = {fro}); the module is kept at its full rank")


def refuse_broken_input(lora: LoraFile) -> None:
    """One clear error naming the first broken module (bad shapes or ranks, an alpha that is not one usable
    number) or NaN/Inf key that would be passed through, before any work; the output never holds them."""
    for m in lora.modules:
        why = next((str(q) for q in m.problems if q.kind == Problem.BROKEN), None)
        if why is None and "alpha" in m.roles:
            why = alpha_problem(m.kind, lora.store.tensor(m.roles["alpha"]), m.nominal_rank is not None)
        if why:
            raise ChopShopError(f"{m.base}: broken module: {why}; repair the file or chop its block away first; "
                                "nothing was written")
    for key in lora.unknown_keys:
        if raw_nonfinite(*lora.store.raw(key)):
            raise ChopShopError(f"{key}: holds NaN or Inf values; it would be passed through into the output; "
                                "nothing was written")


def plan(lora: LoraFile, rule: Rule, base: BaseWeights | None, device: torch.device, dtype: str) -> ResizePlan:
    refuse_broken_input(lora)
    todo = [m for m in lora.modules if why_not_resizable(m) is None]
    p = ResizePlan(rule, todo)
    _check_base(lora, rule, base, todo, p)
    if lora.unknown_keys:
        p.warnings.append(f"{len(lora.unknown_keys)} keys that are no adapter passed through unchanged "
                          f"(e.g. {', '.join(lora.unknown_keys[:3])})")
    if rule.is_global and todo:
        p.ranks = _global_ranks(lora, rule, p, device, dtype)
    return p


def _global_ranks(lora: LoraFile, rule: Rule, p: ResizePlan, device, dtype: str) -> dict[str, int]:
    specs = []
    for m in p.todo:
        d = decompose(lora, m, device)
        S = (d.S * abs(d.gamma)).cpu()
        fro, spn = p.base_norms.get(m.base, (None, None))
        specs.append(rank_rules.ModuleSpectrum(S, d.exact.rows + d.exact.cols, fro, spn,
                                               min_rank=1 if (m.dora and rank_rules.n_eff(S)) else 0,
                                               max_rank=rule.max_rank))
    bpv = torch.empty(0, dtype=out_dtype(dtype, p.todo[0])).element_size()
    if rule.mode == "size":
        fixed = lora.total_bytes() - sum(lora.store.nbytes(k) for m in p.todo for k in m.keys)
        budget = rule.value * 2 ** 20 - fixed - 4 * len(p.todo) - 100 * len(lora.store.keys())
        if budget <= 0:
            raise ChopShopError(f"size {rule.value} MiB is smaller than the tensors that cannot be resized "
                                f"({fixed / 2 ** 20:.2f} MiB); choose a larger size")
        ks = rank_rules.select_for_size(specs, budget, bpv)
    else:
        ks = rank_rules.select_by_recipe(specs, rule.recipe, bpv)
    return {m.base: k for m, k in zip(p.todo, ks)}


def _rank_for(p: ResizePlan, m: Module) -> int | None:
    if m.base in p.ranks:
        return p.ranks[m.base]
    fro = p.base_norms.get(m.base, (1.0,))[0]
    if p.rule.needs_base and not (fro is not None and math.isfinite(fro) and fro > 0):
        return 1 << 30   # no usable base norm: keep everything (reported in the plan's warnings)
    return None


def apply(lora: LoraFile, p: ResizePlan, opts: Options, progress=None, check_cancel=None,
          workers: int = 2) -> list:
    """Every module's result, in file order. Same-shaped LoRA/LoCon modules are resized as one batch
    (``resize_batch``); on CPU ``workers`` threads (at most 2) take units in turn, largest first (each torch op
    single-threaded), so both cores work."""
    results: dict[int, object] = {}
    lock = threading.Lock()

    def unit(idx: list[int]):
        if check_cancel:
            check_cancel()
        ms = [lora.modules[i] for i in idx]
        ranks = [_rank_for(p, m) for m in ms]
        norms = [p.base_norms.get(m.base, (None, None)) for m in ms]
        if batch_key(ms[0], opts.device) is not None:
            rs = resize_batch(lora, ms, p.rule, opts, ranks, norms)
        else:
            rs = [resize_module(lora, m, p.rule, opts, k, bn) for m, k, bn in zip(ms, ranks, norms)]
        with lock:
            results.update(zip(idx, rs))
            if progress:
                progress(len(results), len(lora.modules))
    units = work_units(lora, opts.device)
    if opts.device.type != "cpu" or len(units) < 4 or workers < 2:
        for u in units:
            unit(u)
    else:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(unit, units))
    return [results[i] for i in range(len(lora.modules))]


def resize(lora: LoraFile, rule: Rule, dtype: str = "fp16", device: str | torch.device | None = None,
           base: BaseWeights | None = None, progress: Callable[[int, int], None] | None = None,
           check_cancel: Callable[[], None] | None = None, size_guard: bool = True) -> tuple[LoraFile, dict]:
    """Resize every module; returns the new LoraFile and the report dict (``resize_report``)."""
    store, meta, report = resized_store(lora, rule, dtype, device, base, progress, check_cancel, size_guard)
    return lora.derive(store, meta), report


def resized_store(lora: LoraFile, rule: Rule, dtype: str = "fp16", device: str | torch.device | None = None,
                  base: BaseWeights | None = None, progress: Callable[[int, int], None] | None = None,
                  check_cancel: Callable[[], None] | None = None,
                  size_guard: bool = True) -> tuple[TensorStore, dict[str, str], dict]:
    """``resize`` up to the output's tensors and metadata (no module analysis of the output, which a file
    about to be written does not need): (store, metadata, report dict)."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    fams = [m.family for m in lora.modules if m.family]
    opts = Options(dtype, dev, size_guard, max(set(fams), key=fams.count) if fams else None)
    out_dtype(dtype, lora.modules[0]) if lora.modules else None   # validates dtype before any work
    workers = min(2, torch.get_num_threads())     # 1 where the caller runs one thread a process (batch pools)
    with cpu_threads(1) if dev.type == "cpu" else nullcontext():
        p = plan(lora, rule, base, dev, dtype)
        results = apply(lora, p, opts, progress, check_cancel, workers)
    added, removed = {}, []
    for r in results:
        added.update(r.added)
        removed += r.removed
    store = lora.store.derive(added, removed)
    if not store.keys():
        raise ChopShopError("every module was dropped (all-zero or rank 0); nothing would be left to save")
    warnings = p.warnings + [w for r in results for w in r.warnings]
    report = ResizeReport(rule.describe(), str(dev), results, t0, warnings).to_dict()
    return store, _metadata(lora, results, rule, report), report


def _metadata(lora: LoraFile, results: list, rule: Rule, report: dict) -> dict[str, str]:
    step = {"operation": "resize", "rule": rule.describe(),
            "fro_retention_mean": round(report["fro_retention_mean"] or 1.0, 6),
            "fro_retention_weighted": round(report["fro_retention_weighted"], 6)}
    if lora.source is not None:
        step["source"] = lora.source.name
    meta = with_provenance(lora.metadata, step)
    out_ranks = {r.rank_out for r in results if r.outcome in ("resized", "converted", "kept") and r.rank_out}
    in_ranks = [r.rank_in for r in results if r.rank_in]
    meta["ss_network_dim"] = str(out_ranks.pop()) if len(out_ranks) == 1 and rule.mode == "rank" else "Dynamic"
    meta["ss_network_alpha"] = "Dynamic"
    if rule.mode == "rank":
        alphas = {round(lora.gamma(m) * int(rule.value), 6) for m in lora.modules if "alpha" in m.roles}
        meta["ss_network_alpha"] = f"{alphas.pop():g}" if len(alphas) == 1 else "Dynamic"
    old = meta.get("ss_training_comment", "")
    sentence = (f"dimension is resized from {max(in_ranks) if in_ranks else '?'} with LoRA Chop Shop ({rule.describe()},"
                f" Frobenius retention {100 * (report['fro_retention_mean'] or 1):.1f}%)")
    meta["ss_training_comment"] = sentence + ("; " + old if old and old != "None" else "")
    return meta


def resize_file(path: str | Path, rule: Rule, output: str | Path | None = None, dtype: str = "fp16",
                device: str | None = None, base: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None, norm_cache: str | Path | None = None) -> dict:
    """Resize a file and save it (default ``<stem>-resized.safetensors`` beside it, never overwriting)."""
    if rule.needs_base and not base:
        raise ChopShopError(f"rule {rule.describe()} needs --base CKPT")
    resolve_device(device)
    lora = read(path)
    bw = from_file(base, cache_dir=norm_cache) if base else None
    store, meta, report = resized_store(lora, rule, dtype=dtype, device=device, base=bw, progress=progress)
    target = Path(output) if output else default_output(lora.source, "resized")
    written, meta = save_store(store, meta, target)
    report["output"] = str(written)
    report["bytes_in"] = Path(path).stat().st_size
    report["bytes_out"] = written.stat().st_size
    return report
