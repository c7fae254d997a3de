"""A resize's rank rule: what the user asked for, validated, and the per-module rank it gives.

Modes (docs/resize.md §4): rank, sv_fro, sv_ratio, sv_cumulative (per module, from the module's own
spectrum), fro_ckpt (per module, relative to ‖W0‖_F), recipe (elias-gaeros' score syntax, e.g.
``fro_ckpt=1,thr=-3.55``; with ``size=`` it becomes global) and size (global: whole file to a MiB budget).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from . import rank_rules
from .errors import ChopShopError

MODES = ("rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "recipe", "size")


def _check(mode: str, v) -> None:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if mode == "rank" and (not number or v != int(v) or v < 1):
        raise ChopShopError(f"rank must be a whole number >= 1, got {v}")
    if mode in ("sv_fro", "sv_cumulative") and not (number and 0 < v <= 1):
        raise ChopShopError(f"{mode} must be in (0, 1] (a retention fraction such as 0.95), got {v}")
    if mode == "sv_ratio" and not (number and v >= 1 and math.isfinite(v)):
        raise ChopShopError(f"sv_ratio must be a finite number >= 1 (keep σ > σ1/ratio), got {v}")
    if mode == "fro_ckpt" and not (number and math.isfinite(v)):
        raise ChopShopError(f"fro_ckpt threshold must be a finite log10 value such as -3.55, got {v}")
    if mode == "size" and not (number and v > 0 and math.isfinite(v)):
        raise ChopShopError(f"size must be a positive number of MiB, got {v}")
    if mode == "recipe":
        rank_rules.parse_recipe(str(v))
    if mode not in MODES:
        raise ChopShopError(f"unknown rank rule {mode!r}; valid: {', '.join(MODES)}")


@dataclass(frozen=True)
class Rule:
    """A rank rule: ``mode`` in MODES, its value, an optional rank cap and kohya's +1."""
    mode: str
    value: float | str
    max_rank: int | None = None
    kohya_compatible: bool = False

    def __post_init__(self):
        _check(self.mode, self.value)
        if self.max_rank is not None and self.max_rank < 1:
            raise ChopShopError(f"max_rank must be >= 1, got {self.max_rank}")

    @cached_property
    def recipe(self) -> rank_rules.ScoreRecipe:
        """The score recipe this rule is (fro_ckpt THR is the recipe ``fro_ckpt=1,thr=THR``), parsed once."""
        if self.mode == "fro_ckpt":
            return rank_rules.ScoreRecipe({"fro_ckpt": 1.0}, thr=float(self.value))
        return rank_rules.parse_recipe(str(self.value))

    @property
    def base_terms(self) -> set[str]:
        """The base-model quantities the rule reads: a subset of {"fro", "spectral"}."""
        if self.mode not in ("fro_ckpt", "recipe"):
            return set()
        w = self.recipe.weights
        return {name for term, name in (("fro_ckpt", "fro"), ("spn_ckpt", "spectral")) if abs(w.get(term, 0)) > 1e-6}

    @property
    def needs_base(self) -> bool:
        return bool(self.base_terms)

    @property
    def is_global(self) -> bool:
        return self.mode == "size" or (self.mode == "recipe" and self.recipe.size_mib is not None)

    def describe(self) -> str:
        s = f"{self.mode}={self.value}"
        if self.max_rank:
            s += f", max_rank={self.max_rank}"
        if self.kohya_compatible:
            s += ", kohya-compatible"
        return s

    def local_rank(self, S_eff, dims: int = 1, base_fro: float | None = None,
                   base_spectral: float | None = None) -> int:
        """The rank this (per-module) rule keeps of the γ-scaled spectrum ``S_eff``."""
        kc, v = self.kohya_compatible, self.value
        if self.mode == "rank":
            k = rank_rules.rank_fixed(S_eff, int(v))
        elif self.mode == "sv_fro":
            k = rank_rules.rank_sv_fro(S_eff, float(v), kc)
        elif self.mode == "sv_ratio":
            k = rank_rules.rank_sv_ratio(S_eff, float(v), kc)
        elif self.mode == "sv_cumulative":
            k = rank_rules.rank_sv_cumulative(S_eff, float(v), kc)
        elif self.mode in ("fro_ckpt", "recipe") and not self.is_global:
            spec = rank_rules.ModuleSpectrum(S_eff, dims, base_fro=base_fro, base_spectral=base_spectral)
            k = rank_rules.select_by_threshold([spec], self.recipe)[0]
        else:
            raise ChopShopError(f"rule {self.describe()} chooses ranks over the whole file, not per module")
        return rank_rules.apply_cap(k, self.max_rank)
