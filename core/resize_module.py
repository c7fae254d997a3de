"""One module's resize: exact SVD of its ΔW, the rule's rank, and the smallest honest form.

``resize_module`` returns a ``ModuleResult``: what happened (outcome, form, ranks, retention, bytes) and the
tensors to add/remove. Forms (docs/resize.md §5-§6): a plain LoRA/LoCon with ``up = U_k·√s``,
``down = √s·Vh_k`` and ``alpha = γ·k`` (γ kept, only truncation changes ΔW); a LoKr or Tucker LoCon resized
in its own form when that is smaller; or the module unchanged when neither is smaller ("size-guarded").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from . import adapters, rank_rules
from .errors import ChopShopError
from .keys import spell
from .lora_file import LoraFile, Module, Problem
from .resize_rule import Rule

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FP16_MAX = 65504.0


@dataclass
class Options:
    dtype: str = "fp16"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    size_guard: bool = True        # False: always a plain LoRA (the best rank-k approximation)
    file_family: str | None = None


@dataclass
class ModuleResult:
    name: str
    block: str | None
    kind: str                 # the adapter's human name
    component: str | None
    rank_in: int | None
    rank_out: int | None = None
    fro_retention: float | None = None
    sum_retention: float | None = None
    outcome: str = ""         # resized, kept, converted, restructured, zero-dropped, rank0-dropped,
    energy: float = 0.0       # size-guarded, passed-through;  energy: ‖ΔW‖_F² (γ included)
    energy_kept: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    form: str = ""            # LoRA, LoCon, LoKr, Tucker LoCon, ... (what the output module is)
    note: str = ""
    added: dict = field(default_factory=dict, repr=False)
    removed: list = field(default_factory=list, repr=False)
    warnings: list = field(default_factory=list, repr=False)


@dataclass
class Decomposition:
    """Thin SVD of mat(ΔW)/γ: ``S`` raw (γ excluded) descending; ``vectors(k)`` -> U (out, k), Vh (k, in')."""
    exact: adapters.Exact
    gamma: float
    tensors: dict

    @property
    def S(self) -> torch.Tensor:
        return self.exact.svd.S


def why_not_resizable(m: Module) -> str | None:
    """The reason a module is passed through, or None when it can be resized."""
    a = adapters.of(m.kind)
    if m.has_problem(Problem.INCOMPLETE, Problem.BROKEN):
        return next(str(p) for p in m.problems if p.kind in (Problem.INCOMPLETE, Problem.BROKEN))
    if not a.resizable:
        return "needs base weights" if a.needs_base else "no low-rank form"
    return None


def decompose(lora: LoraFile, m: Module, device: torch.device) -> Decomposition:
    """The module's exact SVD; NaN/Inf in its tensors is refused with the tensor's name."""
    t = lora.module_tensors(m, torch.float32, device)
    g = lora.gamma(m)
    a = adapters.of(m.kind)
    err = None
    try:
        ex = a.decompose(t)
        ok = bool(torch.isfinite(ex.svd.S).all()) and math.isfinite(g)
    except ChopShopError as e:       # factors whose shapes do not chain (a rank mismatch)
        raise ChopShopError(f"{m.base}: {e}; nothing was written") from None
    except (RuntimeError, torch.linalg.LinAlgError) as e:  # a solver that chokes on NaN/Inf, or bad shapes
        ex, ok, err = None, False, e
    if not ok:
        bad = [m.roles[r] for r, x in t.items() if x.is_floating_point() and not torch.isfinite(x).all()]
        if ex is None and not bad:
            shapes = ", ".join(f"{r} {tuple(x.shape)}" for r, x in t.items() if r != "alpha")
            raise ChopShopError(f"{m.base}: cannot decompose this {a.name} ({shapes}): "
                                f"{str(err).splitlines()[0]}; nothing was written")
        raise ChopShopError(f"{m.base}: tensor {', '.join(repr(b) for b in bad) or 'alpha'} holds NaN or "
                            "Inf values; the LoRA is broken there, nothing was written")
    return Decomposition(ex, g, t)


def out_dtype(dtype: str, m: Module) -> torch.dtype:
    if dtype == "match":
        from .safetensors_file import DTYPES as NAMES
        main = next((r for r in ("up", "hada_w1_a", "lokr_w1", "lokr_w1_a", "diff") if r in m.dtypes), None)
        return NAMES[m.dtypes[main]] if main else torch.float16
    if dtype not in DTYPES:
        raise ChopShopError(f"dtype must be one of fp16, bf16, fp32, match; got {dtype!r}")
    return DTYPES[dtype]


def max_abs(x: torch.Tensor) -> list[float]:
    """max |x[i]| for each row of a 2-D (or leading-dim) stack; NaN where a row holds NaN. amax/amin: two
    fast passes (``vector_norm(x, inf)`` is an order of magnitude slower on CPU)."""
    x = x.reshape(x.shape[0], -1)
    return torch.maximum(x.amax(1), -x.amin(1)).tolist()


def cast(x: torch.Tensor, dtype: torch.dtype, what: str, bound: float | None = None) -> torch.Tensor:
    """``x`` in the output dtype on the CPU; refuses NaN/Inf and fp16 overflow. ``bound``: a proven bound on
    max|x| from finite inputs (√σ_1 for SVD factors), which saves the pass over x when it is small enough."""
    if bound is not None and math.isfinite(bound) and bound < FP16_MAX / 2:
        return x.to(device="cpu", dtype=dtype).contiguous()
    top = max_abs(x.reshape(1, -1))[0] if x.numel() else 0.0   # NaN shows here too
    if not math.isfinite(top):
        raise ChopShopError(f"{what}: the resized factors are not finite; nothing was written")
    if dtype == torch.float16 and top > FP16_MAX:
        raise ChopShopError(f"{what}: values exceed the fp16 range (65504); choose --dtype bf16 or fp32")
    return x.to(device="cpu", dtype=dtype).contiguous()


def nbytes(tensors: dict) -> int:
    return sum(v.numel() * v.element_size() for v in tensors.values())


def passed_through(lora: LoraFile, m: Module, why: str) -> ModuleResult:
    b = sum(lora.store.nbytes(k) for k in m.keys)
    name = adapters.KIND_NAMES[m.kind]
    return ModuleResult(m.base, m.block, name, m.component, m.nominal_rank, m.nominal_rank, outcome="passed-through",
                        bytes_in=b, bytes_out=b, form=name, note=why,
                        warnings=[f"{m.base}: {name} module passed through unchanged ({why})"])


def resize_module(lora: LoraFile, m: Module, rule: Rule, opts: Options, rank: int | None = None,
                  base_norms: tuple[float | None, float | None] = (None, None)) -> ModuleResult:
    """Resize one module: ``rank`` when a global rule already chose it, else the rule's own rank (a batch
    calls ``assess`` and ``finish`` on the decompositions it computed instead)."""
    why = why_not_resizable(m)
    if why is not None:
        return passed_through(lora, m, why)
    d = decompose(lora, m, opts.device)
    res, k = assess(lora, m, rule, d, rank, base_norms)
    return res if k is None else finish(lora, m, d, k, res, opts)


def assess(lora: LoraFile, m: Module, rule: Rule, d: Decomposition, rank: int | None = None,
           base_norms: tuple[float | None, float | None] = (None, None)) -> tuple[ModuleResult, int | None]:
    """The module's energies and the rank k to keep (clamped to [1, n_eff]); k is None when the result is
    already final (an all-zero or rank-0 module, dropped)."""
    g = abs(d.gamma)
    S_eff = [x * g for x in d.S.tolist()]      # Python floats: a few dozen values, cheaper than torch calls
    n = rank_rules.n_eff(S_eff)
    k = rank if rank is not None else rule.local_rank(S_eff, d.exact.rows + d.exact.cols, *base_norms)
    e = list(accumulate(x * x for x in S_eff))
    res = ModuleResult(m.base, m.block, adapters.KIND_NAMES[m.kind], m.component, m.nominal_rank,
                       energy=e[-1] if e else 0.0, bytes_in=sum(lora.store.nbytes(key) for key in m.keys))
    if n == 0 or (k == 0 and not m.dora):
        return _dropped(m, res, zero=n == 0), None
    k = min(max(k, 1), n)
    res.energy_kept = e[k - 1]
    res.fro_retention = math.sqrt(res.energy_kept / res.energy) if res.energy > 0 else 1.0
    total = sum(S_eff)
    res.sum_retention = sum(S_eff[:k]) / total if total > 0 else 1.0
    if m.dora:
        res.warnings.append(f"{m.base}: DoRA module resized; dora_scale kept, retention measures ΔW only "
                            "(approximate for W')")
    return res, k


def needs_factors(m: Module, k: int) -> bool:
    """Whether ``finish`` builds the rank-k LoRA factors of this plain LoRA/LoCon (it is not kept)."""
    return m.kind in ("lora", "locon") and k < (m.nominal_rank or 0)


def finish(lora: LoraFile, m: Module, d: Decomposition, k: int, res: ModuleResult, opts: Options) -> ModuleResult:
    """The module at rank k in its output form (kept, plain LoRA, own form or unchanged)."""
    odt = out_dtype(opts.dtype, m)
    if m.kind in ("lora", "locon") and not needs_factors(m, k):
        return _kept(lora, m, res, odt)
    return _choose_form(lora, m, d, k, res, odt, opts)


def _dropped(m: Module, res: ModuleResult, zero: bool) -> ModuleResult:
    if zero and m.dora:
        res.outcome, res.rank_out, res.bytes_out = "kept", m.nominal_rank, res.bytes_in
    else:
        res.outcome, res.rank_out, res.bytes_out = ("zero-dropped" if zero else "rank0-dropped"), 0, 0
        res.removed = list(m.keys)
    res.fro_retention = res.sum_retention = 1.0 if zero else 0.0
    res.form = res.kind if res.outcome == "kept" else "-"
    return res


def _kept(lora: LoraFile, m: Module, res: ModuleResult, odt: torch.dtype) -> ModuleResult:
    """A LoRA already at or below the rule's rank: unchanged apart from the output dtype."""
    res.outcome, res.rank_out, res.form = "kept", m.nominal_rank, res.kind
    from .safetensors_file import DTYPES
    res.added = {key: cast(lora.store.tensor(key).to(torch.float32), odt, m.base) for role, key in m.roles.items()
                 if role in ("up", "down") and DTYPES[m.dtypes[role]] != odt}   # the header says: no read
    res.bytes_out = res.bytes_in - sum(lora.store.nbytes(kk) for kk in res.added) + nbytes(res.added)
    return res


def _choose_form(lora, m, d, k, res, odt, opts) -> ModuleResult:
    """Plain LoRA at rank k, the module's own form (≥ the same retention), or unchanged: the smallest."""
    a = adapters.of(m.kind)
    plain, own = k * (d.exact.rows + d.exact.cols), a.param_count(m.shapes)
    if not opts.size_guard or m.kind in ("lora", "locon"):
        return _as_plain(m, d, k, res, odt, opts)
    st = a.structured(d.tensors, d.gamma, res.energy_kept, m.shapes)
    if st is not None and st.retention < res.fro_retention - 1e-9:
        st = None          # its own form cannot hold what the rank-k LoRA holds: not a candidate
    best = min(own, plain, st.params if st else math.inf)
    if best == own:
        res.outcome, res.rank_out, res.bytes_out, res.form = "size-guarded", m.nominal_rank, res.bytes_in, res.kind
        res.fro_retention = res.sum_retention = 1.0
        res.energy_kept = res.energy
        res.note = f"a rank-{k} LoRA would hold {plain} values, the module holds {own}"
        return res
    if st is not None and best == st.params:
        return _as_structured(m, st, res, odt)
    return _as_plain(m, d, k, res, odt, opts)


def _replace(m: Module, res: ModuleResult, new: dict) -> ModuleResult:
    drop = [key for role, key in m.roles.items() if role not in adapters.KEPT_ROLES]
    res.removed = [key for key in drop if key not in new]
    res.added = new
    from .safetensors_file import DTYPE_SIZES
    kept = sum(math.prod(m.shapes[r]) * DTYPE_SIZES[m.dtypes[r]] for r in m.roles if r in adapters.KEPT_ROLES)
    res.bytes_out = nbytes(new) + kept
    return res


def _as_structured(m: Module, st: adapters.Structured, res: ModuleResult, odt) -> ModuleResult:
    new = {}
    for role, x in st.tensors.items():
        key = m.roles.get(role) or (spell(m.base, role, m.family) if role in ("up", "down", "alpha")
                                    else f"{m.base}.{role}")
        new[key] = x.to(torch.float32) if role == "alpha" else cast(x, odt, m.base)
    res.outcome, res.form = "restructured", st.form
    res.rank_out = adapters.of(m.kind).rank({r: tuple(x.shape) for r, x in st.tensors.items()})
    res.fro_retention, res.energy_kept, res.sum_retention = st.retention, st.energy_kept, None
    res.note = f"kept as a {st.form} with {st.params} values"
    return _replace(m, res, new)


def _as_plain(m: Module, d: Decomposition, k: int, res: ModuleResult, odt, opts: Options) -> ModuleResult:
    lazy = d.exact.svd
    checked = k in lazy.ready        # built by a batch, already range-checked and cast
    up, down = lazy.factors(k)
    # |U_ij|, |Vh_ij| <= 1: no entry of a balanced split exceeds √σ_1
    bound = 0.0 if checked else 1.01 * float(d.S[0].sqrt()) if lazy.balanced else None
    out_ = up.shape[0]
    if m.kind in ("lora", "locon"):                      # keep each factor's own ndim and trailing shape
        down = down.reshape(k, *m.shapes["down"][1:])
        up = up.reshape(out_, k, *m.shapes["up"][2:])
    else:
        shape = m.delta_shape() or (out_, down.shape[1])
        if len(shape) > 2:                               # conv: the kernel stays on down
            down = down.reshape(k, *shape[1:])
            up = up.reshape(out_, k, *([1] * (len(shape) - 2)))
    fam = m.family or opts.file_family
    new = {spell(m.base, "up", fam): cast(up, odt, m.base, bound),
           spell(m.base, "down", fam): cast(down, odt, m.base, bound)}
    if "alpha" in m.roles or abs(d.gamma - 1.0) > 1e-12:
        new[spell(m.base, "alpha", fam)] = torch.tensor(d.gamma * k, dtype=torch.float32)
    res.outcome = "resized" if m.kind in ("lora", "locon") else "converted"
    res.rank_out = k
    res.form = "LoCon" if len(m.delta_shape() or ()) > 2 else "LoRA"
    return _replace(m, res, new)
