"""Rank selection from singular spectra (docs/resize.md §4).

Every spectrum ``S`` is 1-D, descending, and **includes the module's scale γ** (σ of γ·B·A).
Per-module rules return the *minimal* rank k* that meets the target, clamped to ``[1, n_eff]``
(0 for an all-zero layer). ``kohya_compatible=True`` reproduces kohya's extra +1 but, unlike
kohya, never emits numerically zero directions (capped at n_eff).

Global rules (elias score recipes, size targets) look at all modules at once and take a list of
:class:`ModuleSpectrum`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Mapping, Sequence

import torch

from .errors import ChopShopError

ZERO_SV = 1e-6  # absolute numerical-zero floor on γ-scaled σ (elias's zero test)
RELATIVE_ZERO_SV = 1e-6  # relative floor, σ_i ≤ σ_1·1e-6 counts as zero
_BOUNDARY_EPS = 1e-12  # relative slack so a target met exactly is not lost to round-off


def _spectrum(S) -> torch.Tensor:
    return torch.tensor(_values(S), dtype=torch.float64)


def _values(S) -> list[float]:
    """The spectrum as Python floats (float64), checked descending. Per-module rules work on these: a
    spectrum has a few dozen values, where every torch call would cost more than the arithmetic."""
    if isinstance(S, torch.Tensor):
        S = S.detach().to("cpu", torch.float64).reshape(-1).tolist()
    else:
        S = [float(x) for x in S]
    if any(map(operator.lt, S, S[1:])):      # some σ_i < σ_(i+1)
        raise ChopShopError("a spectrum must be sorted in descending order")
    return S


def _n_eff(S: list[float]) -> int:
    if not S:
        return 0
    floor = max(ZERO_SV, S[0] * RELATIVE_ZERO_SV)
    return sum(1 for x in S if x > floor)


def n_eff(S) -> int:
    """Number of σ_i that are not numerical zeros: σ_i > max(1e-6, σ_1·1e-6).

    The 1e-6 floor is absolute on γ-scaled σ (an all-zero or vanishing layer gives 0);
    the relative floor drops float32 round-off directions of a rank-deficient product.
    """
    return _n_eff(_values(S))


def _finish(k_star: int, S: list[float], kohya_compatible: bool) -> int:
    n = _n_eff(S)
    if n == 0:
        return 0
    k = max(k_star, 1) + (1 if kohya_compatible else 0)
    return min(k, n)


def _check_fraction(name: str, p: float) -> float:
    if not 0.0 < p <= 1.0:
        raise ChopShopError(f"{name} needs a target in (0, 1], got {p}")
    return float(p)


def _first_reaching(cumulative: list[float], target: float) -> int:
    """Smallest k with cumulative[k-1] >= target (kohya's left searchsorted + 1)."""
    goal = target * (1.0 - _BOUNDARY_EPS)
    return next((i + 1 for i, c in enumerate(cumulative) if c >= goal), len(cumulative))


def rank_fixed(S, k: int) -> int:
    """Fixed rank k, capped at n_eff (never padded with zero directions; 0 for a zero layer)."""
    if int(k) != k or k <= 0:
        raise ChopShopError(f"rank must be a positive integer, got {k}")
    return _finish(int(k), _values(S), False)


def rank_sv_fro(S, p: float, kohya_compatible: bool = False) -> int:
    """Smallest k with Frobenius retention ρ_F(k) >= p, i.e. Σ_{i≤k} σ_i² >= p²·Σ σ_i²."""
    p = _check_fraction("sv_fro", p)
    S = _values(S)
    if _n_eff(S) == 0:
        return 0
    energy = list(accumulate(x * x for x in S))
    return _finish(_first_reaching(energy, p * p * energy[-1]), S, kohya_compatible)


def rank_sv_cumulative(S, p: float, kohya_compatible: bool = False) -> int:
    """Smallest k with sum retention ρ_S(k) >= p, i.e. Σ_{i≤k} σ_i >= p·Σ σ_i."""
    p = _check_fraction("sv_cumulative", p)
    S = _values(S)
    if _n_eff(S) == 0:
        return 0
    total = list(accumulate(S))
    return _finish(_first_reaching(total, p * total[-1]), S, kohya_compatible)


def rank_sv_ratio(S, p: float, kohya_compatible: bool = False) -> int:
    """k = #{i : σ_i > σ_1 / p} (strict, as kohya): keep every σ within a factor p of σ_1. p >= 1."""
    if not p >= 1.0:
        raise ChopShopError(f"sv_ratio needs a ratio >= 1, got {p}")
    S = _values(S)
    k_star = sum(1 for x in S if x > S[0] / p) if S else 0
    return _finish(k_star, S, kohya_compatible)


def apply_cap(k: int, max_rank: int | None) -> int:
    """min(k, max_rank); None means no cap."""
    if max_rank is None:
        return k
    if int(max_rank) != max_rank or max_rank <= 0:
        raise ChopShopError(f"max rank must be a positive integer, got {max_rank}")
    return min(k, int(max_rank))


def fro_retention(S, k: int) -> float:
    """ρ_F(k) = sqrt(Σ_{i≤k} σ_i² / Σ σ_i²); 1.0 for an all-zero layer."""
    S = _values(S)
    total = sum(x * x for x in S)
    return 1.0 if total == 0.0 else math.sqrt(sum(x * x for x in S[:k]) / total)


def sum_retention(S, k: int) -> float:
    """ρ_S(k) = Σ_{i≤k} σ_i / Σ σ_i; 1.0 for an all-zero layer."""
    S = _values(S)
    total = sum(S)
    return 1.0 if total == 0.0 else sum(S[:k]) / total


# ---------------------------------------------------------------------------------------------
# Global rules


@dataclass
class ModuleSpectrum:
    """What the global rules need to know about one module.

    S: γ-scaled spectrum (descending). dims: out + in' (values stored per kept direction).
    base_fro / base_spectral: ‖W0‖_F and σ_max(W0), only for the *_ckpt score terms.
    min_rank / max_rank: per-module bounds the selection honours (e.g. 1 for DoRA modules).
    """

    S: torch.Tensor
    dims: int
    base_fro: float | None = None
    base_spectral: float | None = None
    min_rank: int = 0
    max_rank: int | None = None


SCORE_TERMS = ("spn_lora", "spn_ckpt", "fro_lora", "fro_ckpt", "params")
TERM_ALIASES = {"fro": "fro_lora", "spn": "spn_lora"}  # short spellings of the LoRA-relative terms


@dataclass(frozen=True)
class ScoreRecipe:
    """One elias score recipe (docs/resize.md §4.3): weights (normalised to sum 1) plus thr or size.

    size_mib wins over thr when both are given. rescale (ρ) adds log10 ρ to every score.
    """

    weights: Mapping[str, float]
    thr: float | None = None
    size_mib: float | None = None
    rescale: float = 1.0

    def __post_init__(self):
        if "subspace" in self.weights:
            raise ChopShopError(
                "the 'subspace' score term is not supported: it keeps a non-prefix set of directions "
                "and needs the base weights per direction"
            )
        unknown = sorted(set(self.weights) - set(SCORE_TERMS))
        if unknown:
            raise ChopShopError(f"unknown score term(s) {unknown}; valid: {', '.join(SCORE_TERMS)}")
        total = sum(self.weights.values())
        if abs(total) < 1e-12:
            raise ChopShopError("score weights sum to 0; give at least one non-zero weight")
        object.__setattr__(self, "weights", {key: w / total for key, w in self.weights.items()})
        if self.thr is None and self.size_mib is None:
            raise ChopShopError("a score recipe needs thr=<log10 threshold> or size=<MiB>")
        if self.size_mib is not None and not self.size_mib > 0:
            raise ChopShopError(f"size must be > 0 MiB, got {self.size_mib}")
        if not self.rescale > 0:
            raise ChopShopError(f"rescale must be > 0, got {self.rescale}")


def parse_recipe(text: str) -> ScoreRecipe:
    """Parse one elias recipe such as ``"fro_ckpt=1,thr=-3.55"`` (bare key = weight 1)."""
    weights: dict[str, float] = {}
    options: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        try:
            number = float(value) if value.strip() else None
        except ValueError:
            raise ChopShopError(f"recipe part {part!r}: {value!r} is not a number") from None
        if key in ("thr", "size", "rescale"):
            if number is None:
                raise ChopShopError(f"recipe key {key!r} needs a value")
            options[key] = number
        else:
            weights[TERM_ALIASES.get(key, key)] = 1.0 if number is None else number
    return ScoreRecipe(weights, options.get("thr"), options.get("size"), options.get("rescale", 1.0))


def _reference(module: ModuleSpectrum, term: str, S: list[float]) -> float:
    if term == "spn_lora":
        return S[0] if S else 0.0
    if term == "fro_lora":
        return math.sqrt(sum(x * x for x in S))
    if term == "params":
        return float(module.dims)
    value = module.base_fro if term == "fro_ckpt" else module.base_spectral
    if value is None:
        raise ChopShopError(f"score term {term!r} needs the base model's norms for every module")
    return float(value)


def _scores(module: ModuleSpectrum, recipe: ScoreRecipe) -> list[float]:
    S = _values(module.S)
    offset = math.log10(recipe.rescale)
    for term, w in recipe.weights.items():
        if abs(w) > 1e-6:
            ref = _reference(module, term, S)
            offset -= w * (math.log10(ref) if ref > 0 else -math.inf)
    n = _n_eff(S)
    return [math.log10(x) + offset for x in S[:n]] + [-math.inf] * (len(S) - n)


def threshold_scores(module: ModuleSpectrum, recipe: ScoreRecipe) -> torch.Tensor:
    """elias's per-direction score (log10 units), float64 (len(S),); numerical zeros get -inf.

    score_i = log10 σ_i + log10 ρ − Σ_j w_j·log10 ref_j, refs: spn_lora σ_1, fro_lora ‖σ‖_2,
    params out+in', fro_ckpt ‖W0‖_F, spn_ckpt σ_max(W0); terms with |w| <= 1e-6 are skipped.
    """
    return torch.tensor(_scores(module, recipe), dtype=torch.float64)


def _bounded(k: int, module: ModuleSpectrum) -> int:
    n = n_eff(module.S)
    return min(max(apply_cap(k, module.max_rank), module.min_rank), n)


def select_by_threshold(modules: Sequence[ModuleSpectrum], recipe: ScoreRecipe) -> list[int]:
    """Rank per module keeping directions with score >= recipe.thr (elias's keep rule)."""
    if recipe.thr is None:
        raise ChopShopError("this recipe has no thr; use select_by_recipe for size targets")
    return [_bounded(sum(1 for x in _scores(m, recipe) if x >= recipe.thr), m) for m in modules]


def select_by_size(
    modules: Sequence[ModuleSpectrum],
    target_bytes: float,
    bytes_per_value: int,
    score_fn: Callable[[ModuleSpectrum], torch.Tensor],
    overshoot: bool = True,
) -> list[int]:
    """Greedy global selection by score until the factor bytes reach target_bytes.

    A direction of a module costs bytes_per_value·dims (alpha, dora_scale, header ignored).
    score_fn gives per-direction scores; they are made non-increasing along each spectrum
    (cumulative min) so every module keeps a prefix. min_rank directions are always kept and
    directions past max_rank or n_eff never are.
    overshoot=True is elias's size mode: threshold = score of the first direction whose
    cumulative cost reaches the target, keep score >= threshold (ties included), so the result
    exceeds the target by less than one direction plus ties. overshoot=False keeps the longest
    sorted prefix that fits within the target (never exceeds it, apart from forced min_rank).
    """
    if not target_bytes > 0:
        raise ChopShopError(f"target size must be > 0 bytes, got {target_bytes}")
    forced, pool_scores, pool_costs, pool_owner = [], [], [], []
    for index, m in enumerate(modules):
        n = n_eff(m.S)
        low = min(m.min_rank, n)
        high = n if m.max_rank is None else min(n, m.max_rank)
        forced.append(low)
        if high > low:
            scores = torch.cummin(torch.as_tensor(score_fn(m), dtype=torch.float64)[:high], 0).values
            pool_scores.append(scores[low:high])
            pool_costs.append(torch.full((high - low,), float(bytes_per_value * m.dims), dtype=torch.float64))
            pool_owner.append(torch.full((high - low,), index, dtype=torch.long))
    ranks = list(forced)
    if not pool_scores:
        return ranks
    budget = target_bytes - sum(k * bytes_per_value * m.dims for k, m in zip(forced, modules))
    scores = torch.cat(pool_scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    cost = torch.cumsum(torch.cat(pool_costs)[order], 0)
    owner = torch.cat(pool_owner)[order]
    if overshoot:
        reach = int(torch.searchsorted(cost, torch.tensor([budget], dtype=torch.float64))[0])
        if reach >= cost.numel():
            kept = owner
        else:
            kept = owner[scores[order] >= scores[order][reach]]
    else:
        kept = owner[cost <= budget]
    for index in kept.tolist():
        ranks[index] += 1
    return ranks


def select_by_recipe(modules: Sequence[ModuleSpectrum], recipe: ScoreRecipe, bytes_per_value: int = 2) -> list[int]:
    """elias recipe: size mode when size_mib is set (it wins over thr), else the threshold."""
    if recipe.size_mib is None:
        return select_by_threshold(modules, recipe)
    return select_by_size(modules, recipe.size_mib * 2**20, bytes_per_value, lambda m: threshold_scores(m, recipe))


def energy_per_byte_scores(module: ModuleSpectrum) -> torch.Tensor:
    """Score for the project's --size rule: log10 of (σ_i/‖ΔW‖_F)² / (out + in').

    The share of the module's own energy a direction carries, per stored value. It is invariant
    to each module's scale, so a small-magnitude module (e.g. a text encoder) competes on how much
    of *its own* delta a direction preserves, not on its absolute size. Greedy selection on it
    maximises Σ_modules ρ_F² for the byte budget (the mean-retention metric kohya reports).
    """
    S = _spectrum(module.S)
    total = float((S * S).sum())
    if total == 0.0:
        return torch.full_like(S, -math.inf)
    scores = torch.log10(S * S / total) - math.log10(module.dims)
    scores[n_eff(S):] = -math.inf
    return scores


def select_for_size(modules: Sequence[ModuleSpectrum], target_bytes: float, bytes_per_value: int) -> list[int]:
    """The project's --size rule: keep the highest relative-energy-per-byte directions that fit.

    Never exceeds target_bytes with factor bytes (except forced min_rank directions); alpha,
    dora_scale, untouched tensors and the header are the caller's to subtract from the budget.
    """
    return select_by_size(modules, target_bytes, bytes_per_value, energy_per_byte_scores, overshoot=False)
