"""SVD Resize: exact factored SVD of every module's delta-W, a rank rule, and a plain LoRA/LoCon out.

Per module: its factors (LoRA/LoCon, Tucker folded, LoHa as Khatri-Rao factors or dense, LoKr by its
Kronecker SVD, full diffs dense) -> thin SVD -> the rule picks k -> ``up = U_k·√s``, ``down = √s·Vh_k``,
``alpha = γ_in·k`` so the effective scale is kept and only truncation changes ΔW (resize.md §5).
Modules are processed one at a time (two passes for the file-size rule, which needs every spectrum), so
peak memory stays near the largest module. Nothing is written until every module succeeded.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import adapters, rank_rules, svd
from .base_model import BaseWeights, check_covers, from_file
from .errors import ChopShopError
from .keys import spell
from .lora_file import LoraFile, Module, Problem, read
from .save import default_output, save, with_provenance
from .threads import cpu_threads

RESIZABLE = {"lora", "locon", "tucker", "loha", "loha_tucker", "lokr", "full"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FP16_MAX = 65504.0


@dataclass(frozen=True)
class Rule:
    """A rank rule: ``mode`` in rank / sv_fro / sv_ratio / sv_cumulative / fro_ckpt / recipe / size."""
    mode: str
    value: float | str
    max_rank: int | None = None
    kohya_compatible: bool = False

    def __post_init__(self):
        v = self.value
        if self.mode == "rank" and (not isinstance(v, (int, float)) or v != int(v) or v < 1):
            raise ChopShopError(f"rank must be a whole number >= 1, got {v}")
        if self.mode in ("sv_fro", "sv_cumulative") and not (isinstance(v, (int, float)) and 0 < v <= 1):
            raise ChopShopError(f"{self.mode} must be in (0, 1] (a retention fraction such as 0.95), got {v}")
        if self.mode == "sv_ratio" and not (isinstance(v, (int, float)) and v >= 1 and math.isfinite(v)):
            raise ChopShopError(f"sv_ratio must be a finite number >= 1 (keep σ > σ1/ratio), got {v}")
        if self.mode == "fro_ckpt" and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ChopShopError(f"fro_ckpt threshold must be a finite log10 value such as -3.55, got {v}")
        if self.mode == "size" and not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ChopShopError(f"size must be a positive number of MiB, got {v}")
        if self.mode == "recipe":
            rank_rules.parse_recipe(str(v))
        if self.mode not in ("rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "recipe", "size"):
            raise ChopShopError(f"unknown rank rule {self.mode!r}")
        if self.max_rank is not None and self.max_rank < 1:
            raise ChopShopError(f"max_rank must be >= 1, got {self.max_rank}")

    @property
    def needs_base(self) -> bool:
        if self.mode == "fro_ckpt":
            return True
        if self.mode == "recipe":
            w = rank_rules.parse_recipe(str(self.value)).weights
            return any(abs(w.get(t, 0)) > 1e-6 for t in ("fro_ckpt", "spn_ckpt"))
        return False

    @property
    def is_global(self) -> bool:
        return self.mode == "size" or (self.mode == "recipe" and rank_rules.parse_recipe(str(self.value)).size_mib)

    def describe(self) -> str:
        s = f"{self.mode}={self.value}"
        if self.max_rank:
            s += f", max_rank={self.max_rank}"
        if self.kohya_compatible:
            s += ", kohya-compatible"
        return s


def rule_from_args(args) -> Rule:
    for mode in ("rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "size"):
        v = getattr(args, mode, None)
        if v is not None:
            if mode == "fro_ckpt" and not getattr(args, "base", None):
                raise ChopShopError("--fro-ckpt needs --base CKPT (the base model the LoRA was trained on)")
            return Rule(mode, v, getattr(args, "max_rank", None), getattr(args, "kohya_compatible", False))
    raise ChopShopError("give a rank rule: --rank, --sv-fro, --sv-ratio, --sv-cumulative, --fro-ckpt or --size")


# ------------------------------------------------------------------------------------ decompositions

@dataclass
class Decomposition:
    """Thin SVD of mat(ΔW)/γ: S (n,) raw (γ excluded) descending; ``vectors(k)`` gives U (out, k), Vh (k, in')."""
    svd: svd.LazySVD
    gamma: float
    rows: int
    cols: int

    @property
    def S(self) -> torch.Tensor:
        return self.svd.S


def decompose(lora: LoraFile, m: Module, device: torch.device) -> Decomposition:
    t = lora.module_tensors(m, torch.float32, device)
    g = lora.gamma(m)
    try:
        d = _decompose(m, t, g)
    except (RuntimeError, torch.linalg.LinAlgError):  # a solver that chokes on NaN/Inf input
        d = None
    if d is None or not (torch.isfinite(d.S).all() and math.isfinite(g)):  # NaN/Inf reaches the spectrum
        bad = [m.roles[r] for r, x in t.items() if x.is_floating_point() and not torch.isfinite(x).all()]
        if d is None and not bad:
            raise ChopShopError(f"{m.base}: the SVD of this module failed to converge; nothing was written")
        raise ChopShopError(f"{m.base}: tensor {', '.join(repr(b) for b in bad) or 'alpha'} holds NaN or "
                            "Inf values; the LoRA is broken there, nothing was written")
    return d


def _decompose(m: Module, t, g: float) -> Decomposition:
    kind = m.kind
    if kind in ("lora", "locon", "tucker"):
        f = adapters.factors(kind, t, g)
        res, rows, cols = svd.svd_product_lazy(f.B, f.A), f.B.shape[0], f.A.shape[1]
    elif kind in ("loha", "loha_tucker"):
        (A1, B1), (A2, B2) = adapters._loha_terms(t)
        rows, cols = A1.shape[0], B1.shape[1]
        if svd.loha_route(rows, cols, A1.shape[1] * A2.shape[1]) == "dense":
            res = svd.LazySVD.of(svd.svd_dense(adapters.loha_dense(t)))
        else:
            res = svd.svd_product_lazy(adapters.khatri_rao_rows(A1, A2), adapters.khatri_rao_cols(B1, B2))
    elif kind == "lokr":
        w = [adapters._lokr_w(t, i) for i in (1, 2)]
        s1, s2 = (svd.svd_product(p.B, p.A) for p in w)
        rows, cols = w[0].B.shape[0] * w[1].B.shape[0], w[0].A.shape[1] * w[1].A.shape[1]
        res = svd.LazySVD(svd.kron_spectrum(s1[1], s2[1]), lambda k: (lambda U, S, Vh: (U, Vh))(*svd.svd_kron(s1, s2, k)))
    elif kind == "full":
        D = t["diff"].flatten(1)
        rows, cols = D.shape
        res = svd.LazySVD.of(svd.svd_dense(D))
    else:
        raise ChopShopError(f"{m.base}: {adapters.KIND_NAMES[kind]} modules cannot be resized")
    return Decomposition(res, g, rows, cols)


# ------------------------------------------------------------------------------------ rank selection

def _local_rank(rule: Rule, S_eff: torch.Tensor, base_fro: float | None) -> int:
    kc = rule.kohya_compatible
    if rule.mode == "rank":
        k = rank_rules.rank_fixed(S_eff, int(rule.value))
    elif rule.mode == "sv_fro":
        k = rank_rules.rank_sv_fro(S_eff, float(rule.value), kc)
    elif rule.mode == "sv_ratio":
        k = rank_rules.rank_sv_ratio(S_eff, float(rule.value), kc)
    elif rule.mode == "sv_cumulative":
        k = rank_rules.rank_sv_cumulative(S_eff, float(rule.value), kc)
    elif rule.mode == "fro_ckpt":
        spec = rank_rules.ModuleSpectrum(S_eff, 1, base_fro=base_fro)
        k = rank_rules.select_by_threshold([spec], rank_rules.ScoreRecipe({"fro_ckpt": 1.0}, thr=float(rule.value)))[0]
    else:
        raise AssertionError(rule.mode)
    return rank_rules.apply_cap(k, rule.max_rank)


# ------------------------------------------------------------------------------------ output

@dataclass
class LayerReport:
    name: str
    block: str | None
    kind: str
    rank_in: int | None
    rank_out: int | None
    fro_retention: float | None
    sum_retention: float | None
    outcome: str           # resized, kept, converted, zero-dropped, rank0-dropped, size-guarded, passed-through
    energy: float = 0.0    # ‖ΔW‖_F² (γ included)
    energy_kept: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    note: str = ""


@dataclass
class Plan:
    ranks: dict[str, int] = field(default_factory=dict)


def _param_count(m: Module) -> int:
    return sum(math.prod(s) for r, s in m.shapes.items() if r not in ("alpha", "dora_scale", "diff_b", "up_bias"))


def _out_dtype(dtype: str, lora: LoraFile, m: Module) -> torch.dtype:
    if dtype == "match":
        from .safetensors_file import DTYPES as NAMES
        main = next((r for r in ("up", "hada_w1_a", "lokr_w1", "lokr_w1_a", "diff") if r in m.dtypes), None)
        return NAMES[m.dtypes[main]] if main else torch.float16
    if dtype not in DTYPES:
        raise ChopShopError(f"dtype must be one of fp16, bf16, fp32, match; got {dtype!r}")
    return DTYPES[dtype]


def _cast(x: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    if dtype == torch.float16 and x.numel() and float(x.abs().max()) > FP16_MAX:
        raise ChopShopError(f"{what}: values exceed the fp16 range (65504); choose --dtype bf16 or fp32")
    return x.to(device="cpu", dtype=dtype).contiguous()


def _new_factors(m: Module, d: Decomposition, k: int, dtype: torch.dtype, family: str | None,
                 had_alpha: bool) -> dict[str, torch.Tensor]:
    """The resized module's tensors under its own base name and spelling."""
    sq = d.S[:k].sqrt()
    U, Vh = d.svd.vectors(k)
    up = U * sq[None, :]
    down = sq[:, None] * Vh
    out_ = up.shape[0]
    if m.kind in ("lora", "locon"):                      # keep each factor's own ndim and trailing shape
        down = down.reshape(k, *m.shapes["down"][1:])
        up = up.reshape(out_, k, *m.shapes["up"][2:])
    else:
        shape = m.delta_shape() or (out_, down.shape[1])
        if len(shape) > 2:                               # conv: the kernel stays on down
            down = down.reshape(k, *shape[1:])
            up = up.reshape(out_, k, *([1] * (len(shape) - 2)))
    res = {spell(m.base, "up", family): _cast(up, dtype, m.base),
           spell(m.base, "down", family): _cast(down, dtype, m.base)}
    if had_alpha or abs(d.gamma - 1.0) > 1e-12:
        res[spell(m.base, "alpha", family)] = torch.tensor(d.gamma * k, dtype=torch.float32)
    return res


def resize(lora: LoraFile, rule: Rule, dtype: str = "fp16", device: str | torch.device | None = None,
           base: BaseWeights | None = None, progress: Callable[[int, int], None] | None = None,
           check_cancel: Callable[[], None] | None = None, size_guard: bool = True) -> tuple[LoraFile, dict]:
    """Resize every module; returns the new LoraFile and the report dict (see ``report``)."""
    dev = torch.device(device) if device is not None else default_device()
    with cpu_threads(1) if dev.type == "cpu" else nullcontext():
        return _resize(lora, rule, dtype, dev, base, progress, check_cancel, size_guard)


def _resize(lora, rule, dtype, dev, base, progress, check_cancel, size_guard):
    t0 = time.perf_counter()
    if rule.needs_base:
        if base is None:
            raise ChopShopError(f"rule {rule.describe()} needs the base model's weights (--base CKPT)")
        check_covers(base, [(m.base, m.target) for m in lora.modules if m.kind in RESIZABLE and m.target], lora.architecture)
        unmapped = [m.base for m in lora.modules if m.kind in RESIZABLE and m.target is None]
        if unmapped:
            raise ChopShopError(f"{len(unmapped)} modules have no known base layer, so {rule.mode} cannot score "
                                f"them (e.g. {', '.join(unmapped[:3])})")
    todo = [m for m in lora.modules if m.kind in RESIZABLE and not m.has_problem(Problem.INCOMPLETE)]
    fam_counts: dict[str, int] = {}
    for m in lora.modules:
        if m.family:
            fam_counts[m.family] = fam_counts.get(m.family, 0) + 1
    file_family = max(fam_counts, key=fam_counts.get) if fam_counts else None
    steps = len(todo) * (2 if rule.is_global else 1)
    done = 0

    def tick():
        nonlocal done
        done += 1
        if check_cancel:
            check_cancel()
        if progress:
            progress(done, steps)

    ranks: dict[str, int] = {}
    if rule.is_global:
        specs = []
        for m in todo:
            d = decompose(lora, m, dev)
            n = rank_rules.n_eff(d.S * abs(d.gamma))
            specs.append(rank_rules.ModuleSpectrum(
                (d.S * abs(d.gamma)).cpu(), sum(rows_cols_sum(m, d)), min_rank=1 if (m.dora and n) else 0,
                max_rank=rule.max_rank,
                base_fro=base.fro(m.target) if base is not None and m.target else None))
            del d
            tick()
        bpv = torch.empty(0, dtype=_out_dtype(dtype, lora, todo[0]) if todo else torch.float16).element_size()
        if rule.mode == "size":
            fixed = sum(lora.store.nbytes(k) for k in lora.store.keys()) - sum(
                lora.store.nbytes(k) for m in todo for k in m.keys)
            budget = rule.value * 2 ** 20 - fixed - 4 * len(todo) - 100 * len(lora.store.keys())
            if budget <= 0:
                raise ChopShopError(f"size {rule.value} MiB is smaller than the tensors that cannot be resized "
                                    f"({fixed / 2 ** 20:.2f} MiB); choose a larger size")
            ks = rank_rules.select_for_size(specs, budget, bpv)
        else:
            ks = rank_rules.select_by_recipe(specs, rank_rules.parse_recipe(str(rule.value)), bpv)
        ranks = {m.base: k for m, k in zip(todo, ks)}

    added: dict[str, torch.Tensor] = {}
    removed: list[str] = []
    layers: list[LayerReport] = []
    warnings: list[str] = []
    todo_set = {m.base for m in todo}
    for m in lora.modules:
        bytes_in = sum(lora.store.nbytes(k) for k in m.keys)
        if m.base not in todo_set:
            why = "needs base weights" if m.kind in adapters.NEEDS_BASE else "no low-rank form"
            if m.has_problem(Problem.INCOMPLETE):
                why = str(m.problems[0])
            layers.append(LayerReport(m.base, m.block, adapters.KIND_NAMES[m.kind], m.nominal_rank, m.nominal_rank,
                                      None, None, "passed-through", bytes_in=bytes_in, bytes_out=bytes_in, note=why))
            warnings.append(f"{m.base}: {adapters.KIND_NAMES[m.kind]} module passed through unchanged ({why})")
            continue
        d = decompose(lora, m, dev)
        S_eff = d.S * abs(d.gamma)
        n = rank_rules.n_eff(S_eff)
        if m.base in ranks:
            k = ranks[m.base]
        else:
            base_fro = base.fro(m.target) if (base is not None and m.target is not None) else None
            k = _local_rank(rule, S_eff, base_fro)
        energy = float((S_eff.double() ** 2).sum())
        rep = LayerReport(m.base, m.block, adapters.KIND_NAMES[m.kind], m.nominal_rank, None,
                          rank_rules.fro_retention(S_eff, k), rank_rules.sum_retention(S_eff, k), "",
                          energy=energy, energy_kept=float((S_eff[:k].double() ** 2).sum()), bytes_in=bytes_in)
        if n == 0:
            removed += m.keys if not m.dora else []
            rep.outcome, rep.rank_out, rep.bytes_out = ("zero-dropped", 0, 0) if not m.dora else ("kept", m.nominal_rank, bytes_in)
            rep.fro_retention = rep.sum_retention = 1.0
        elif k == 0 and not m.dora:
            removed += m.keys
            rep.outcome, rep.rank_out, rep.bytes_out = "rank0-dropped", 0, 0
        else:
            k = max(k, 1)
            rep.fro_retention = rank_rules.fro_retention(S_eff, k)
            rep.sum_retention = rank_rules.sum_retention(S_eff, k)
            rep.energy_kept = float((S_eff[:k].double() ** 2).sum())
            odt = _out_dtype(dtype, lora, m)
            r_in = m.nominal_rank
            if m.kind in ("lora", "locon") and k >= (r_in or 0):
                rep.outcome, rep.rank_out = "kept", r_in
                cast = {key: _cast(lora.store.tensor(key).to(torch.float32), odt, m.base)
                        for role, key in m.roles.items()
                        if role in ("up", "down") and lora.store.tensor(key).dtype != odt}
                added.update(cast)
                rep.bytes_out = bytes_in - sum(lora.store.nbytes(kk) for kk in cast) + sum(
                    v.numel() * v.element_size() for v in cast.values())
            else:
                out_, in_ = d.rows, d.cols
                new_params = k * (out_ + in_)
                if size_guard and m.kind not in ("lora", "locon") and new_params >= _param_count(m):
                    rep.outcome, rep.rank_out, rep.bytes_out = "size-guarded", r_in, bytes_in
                    rep.fro_retention = rep.sum_retention = 1.0
                    rep.energy_kept = energy
                    rep.note = f"a rank-{k} LoRA would hold {new_params} values, the module holds {_param_count(m)}"
                else:
                    new = _new_factors(m, d, k, odt, m.family or file_family, "alpha" in m.roles)
                    drop = [key for role, key in m.roles.items()
                            if role not in ("dora_scale", "diff_b", "up_bias", "reshape_weight")]
                    removed += [key for key in drop if key not in new]
                    added.update(new)
                    rep.outcome = "resized" if m.kind in ("lora", "locon") else "converted"
                    rep.rank_out = k
                    keep_extra = sum(lora.store.nbytes(key) for role, key in m.roles.items()
                                     if role in ("dora_scale", "diff_b", "up_bias", "reshape_weight"))
                    rep.bytes_out = keep_extra + sum(v.numel() * v.element_size() for v in new.values())
            if m.dora:
                warnings.append(f"{m.base}: DoRA module resized; dora_scale kept, retention measures ΔW only "
                                "(approximate for W')")
        layers.append(rep)
        del d
        tick()
    store = lora.store.derive(added, removed)
    if not store.keys():
        raise ChopShopError("every module was dropped (all-zero or rank 0); nothing would be left to save")
    report = summarize(layers, rule, t0)
    report["warnings"] = warnings
    report["device"] = str(dev)
    meta = _metadata(lora, layers, rule, report)
    return lora.derive(store, meta), report


def rows_cols_sum(m: Module, d: Decomposition) -> tuple[int, int]:
    return d.rows, d.cols


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def summarize(layers: list[LayerReport], rule: Rule, t0: float) -> dict:
    measured = [lr for lr in layers if lr.fro_retention is not None and lr.outcome != "passed-through"]
    ret = [lr.fro_retention for lr in measured]
    e_all = sum(lr.energy for lr in measured)
    e_kept = sum(lr.energy_kept for lr in measured)
    per_block: dict[str, dict] = {}
    for lr in measured:
        b = per_block.setdefault(lr.block or "pass-through", {"modules": 0, "energy": 0.0, "energy_kept": 0.0,
                                                              "rank_in": 0, "rank_out": 0})
        b["modules"] += 1
        b["energy"] += lr.energy
        b["energy_kept"] += lr.energy_kept
        b["rank_in"] += lr.rank_in or 0
        b["rank_out"] += lr.rank_out or 0
    for b in per_block.values():
        b["fro_retention"] = math.sqrt(b["energy_kept"] / b["energy"]) if b["energy"] > 0 else 1.0
    outcomes: dict[str, int] = {}
    for lr in layers:
        outcomes[lr.outcome] = outcomes.get(lr.outcome, 0) + 1
    return {
        "rule": rule.describe(),
        "layers": [{"name": lr.name, "block": lr.block, "type": lr.kind, "rank_in": lr.rank_in,
                    "rank_out": lr.rank_out, "fro_retention": lr.fro_retention, "sum_retention": lr.sum_retention,
                    "outcome": lr.outcome, "bytes_in": lr.bytes_in, "bytes_out": lr.bytes_out,
                    **({"note": lr.note} if lr.note else {})} for lr in layers],
        "fro_retention_mean": (sum(ret) / len(ret)) if ret else None,
        "fro_retention_std": (math.sqrt(sum((r - sum(ret) / len(ret)) ** 2 for r in ret) / len(ret)) if ret else None),
        "fro_retention_weighted": math.sqrt(e_kept / e_all) if e_all > 0 else 1.0,
        "per_block": per_block,
        "outcomes": outcomes,
        "compute_seconds": round(time.perf_counter() - t0, 3),
    }


def _metadata(lora: LoraFile, layers: list[LayerReport], rule: Rule, report: dict) -> dict[str, str]:
    step = {"operation": "resize", "rule": rule.describe(),
            "fro_retention_mean": round(report["fro_retention_mean"] or 1.0, 6),
            "fro_retention_weighted": round(report["fro_retention_weighted"], 6)}
    if lora.source is not None:
        step["source"] = lora.source.name
    meta = with_provenance(lora.metadata, step)
    out_ranks = {lr.rank_out for lr in layers if lr.outcome in ("resized", "converted", "kept") and lr.rank_out}
    in_ranks = [lr.rank_in for lr in layers if lr.rank_in]
    if len(out_ranks) == 1 and rule.mode == "rank":
        meta["ss_network_dim"] = str(out_ranks.pop())
    else:
        meta["ss_network_dim"] = "Dynamic"
        meta["ss_network_alpha"] = "Dynamic"
    if rule.mode == "rank":
        alphas = set()
        for m in lora.modules:
            if "alpha" in m.roles:
                alphas.add(round(lora.gamma(m) * int(rule.value), 6))
        meta["ss_network_alpha"] = f"{alphas.pop():g}" if len(alphas) == 1 else "Dynamic"
    old = meta.get("ss_training_comment", "")
    sentence = (f"dimension is resized from {max(in_ranks) if in_ranks else '?'} with LoRA Chop Shop ({rule.describe()},"
                f" Frobenius retention {100 * (report['fro_retention_mean'] or 1):.1f}%)")
    meta["ss_training_comment"] = sentence + ("; " + old if old and old != "None" else "")
    return meta


def render_report(result: dict) -> str:
    lines = [f"Rule: {result['rule']}  device: {result.get('device', '?')}"]
    width = max((len(lr["name"]) for lr in result["layers"]), default=10)
    width = min(width, 72)
    for lr in result["layers"]:
        fr = "" if lr["fro_retention"] is None else f"fro {100 * lr['fro_retention']:6.2f}%"
        lines.append(f"  {lr['name'][:width]:<{width}} {lr.get('block') or '-':>5} {lr['type']:<12} "
                     f"{lr['rank_in'] if lr['rank_in'] is not None else '-':>4} -> "
                     f"{lr['rank_out'] if lr['rank_out'] is not None else '-':<4} {fr} {lr['outcome']}")
    if result["per_block"]:
        lines.append("Per block (Frobenius retention, ranks summed):")
        for b, v in result["per_block"].items():
            lines.append(f"  {b:>12}: {100 * v['fro_retention']:6.2f}%  modules {v['modules']:4d}  "
                         f"rank {v['rank_in']} -> {v['rank_out']}")
    mean = result["fro_retention_mean"]
    lines.append(f"Average Frobenius norm retention: {100 * (mean or 1):.2f}% (unweighted, as kohya prints)"
                 f" | std: {100 * (result['fro_retention_std'] or 0):.2f}%")
    lines.append(f"Energy-weighted retention: {100 * result['fro_retention_weighted']:.2f}%")
    lines.append("Outcomes: " + ", ".join(f"{k} {v}" for k, v in result["outcomes"].items()))
    for w in result.get("warnings", [])[:20]:
        lines.append(f"Warning: {w}")
    if "output" in result:
        lines.append(f"Size: {result['bytes_in'] / 2 ** 20:.2f} MiB -> {result['bytes_out'] / 2 ** 20:.2f} MiB"
                     f" in {result.get('seconds', result['compute_seconds'])} s")
        lines.append(f"Saved: {result['output']}")
    return "\n".join(lines)


def resize_file(path: str | Path, rule: Rule, output: str | Path | None = None, dtype: str = "fp16",
                device: str | None = None, base: str | Path | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Resize a file and save it (default ``<stem>-resized.safetensors`` beside it, never overwriting)."""
    if rule.needs_base and not base:
        raise ChopShopError(f"rule {rule.describe()} needs --base CKPT")
    lora = read(path)
    bw = from_file(base) if base else None
    out, report = resize(lora, rule, dtype=dtype, device=device, base=bw, progress=progress)
    target = Path(output) if output else default_output(lora.source, "resized")
    written, meta = save(out, target)
    report["output"] = str(written)
    report["bytes_in"] = Path(path).stat().st_size
    report["bytes_out"] = written.stat().st_size
    return report
