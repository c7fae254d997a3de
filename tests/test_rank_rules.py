"""core.rank_rules on crafted spectra (resize.md §4)."""

import math

import pytest
import torch

from core.errors import ChopShopError
from core.rank_rules import (
    ModuleSpectrum,
    ScoreRecipe,
    apply_cap,
    energy_per_byte_scores,
    fro_retention,
    n_eff,
    parse_recipe,
    rank_fixed,
    rank_sv_cumulative,
    rank_sv_fro,
    rank_sv_ratio,
    select_by_recipe,
    select_by_size,
    select_by_threshold,
    select_for_size,
    sum_retention,
    threshold_scores,
)

S_KOHYA = [3.0, 2.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # resize.md §4.2 table


@pytest.mark.parametrize(
    "rule, p, minimal, kohya",
    [
        (rank_sv_fro, 0.9, 2, 3),
        (rank_sv_fro, 0.99, 3, 4),
        (rank_sv_cumulative, 0.8, 3, 4),
        (rank_sv_ratio, 2.5, 2, 3),
        (rank_sv_ratio, 10, 4, 4),  # kohya gives 5 (a zero direction); we cap at n_eff = 4
    ],
)
def test_kohya_table(rule, p, minimal, kohya):
    assert rule(S_KOHYA, p) == minimal
    assert rule(torch.tensor(S_KOHYA), p, kohya_compatible=True) == kohya


def test_n_eff():
    assert n_eff(S_KOHYA) == 4
    assert n_eff([5.0, 4e-6, 1e-6, 0.0]) == 1  # 4e-6 <= 5·1e-6 (relative), 1e-6 not > 1e-6 (absolute)
    assert n_eff([2e-6, 1.5e-6]) == 2
    assert n_eff([1e-6, 0.0]) == 0
    assert n_eff([]) == 0


def test_all_zero_layers_give_zero():
    zero = [0.0] * 6
    for rule, p in [(rank_sv_fro, 0.9), (rank_sv_cumulative, 0.5), (rank_sv_ratio, 4)]:
        assert rule(zero, p) == 0
        assert rule(zero, p, kohya_compatible=True) == 0
    assert rank_fixed(zero, 4) == 0
    assert fro_retention(zero, 0) == 1.0 and sum_retention(zero, 0) == 1.0


def test_fixed_rank():
    assert rank_fixed(S_KOHYA, 2) == 2
    assert rank_fixed(S_KOHYA, 6) == 4  # above n_eff: kept at native rank, never padded


def test_ties():
    S = [2.0, 1.0, 1.0, 1.0]  # energies 4, 1, 1, 1 (total 7)
    assert rank_sv_ratio(S, 2.0) == 1  # strict: 1.0 is not > 2/2
    assert rank_sv_ratio(S, 2.0001) == 4  # the whole tie block goes in at once
    assert rank_sv_fro(S, math.sqrt(5 / 7)) == 2  # target met exactly at k = 2
    assert rank_sv_cumulative(S, 0.6) == 2  # (2 + 1)/5 = 0.6 exactly
    assert rank_sv_fro([1.0, 1.0], 1.0) == 2 and rank_sv_fro([1.0, 1.0], math.sqrt(0.5)) == 1


def test_small_targets_clamp_to_one():
    assert rank_sv_fro(S_KOHYA, 1e-9) == 1
    assert rank_sv_ratio(S_KOHYA, 1.0) == 1  # nothing is > σ_1; kohya clamps to 1 (+1 = 2)
    assert rank_sv_ratio(S_KOHYA, 1.0, kohya_compatible=True) == 2
    assert rank_sv_fro(S_KOHYA, 1.0) == 4 and rank_sv_cumulative(S_KOHYA, 1.0, kohya_compatible=True) == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda: rank_fixed(S_KOHYA, 0),
        lambda: rank_fixed(S_KOHYA, -3),
        lambda: rank_fixed(S_KOHYA, 2.5),
        lambda: rank_sv_fro(S_KOHYA, 0.0),
        lambda: rank_sv_fro(S_KOHYA, 1.01),
        lambda: rank_sv_cumulative(S_KOHYA, -0.2),
        lambda: rank_sv_cumulative(S_KOHYA, float("nan")),
        lambda: rank_sv_ratio(S_KOHYA, 0.5),
        lambda: apply_cap(3, 0),
        lambda: rank_sv_fro([1.0, 2.0], 0.9),  # not descending
    ],
)
def test_invalid_parameters_raise(call):
    with pytest.raises(ChopShopError):
        call()


def test_retention():
    assert fro_retention(S_KOHYA, 3) == pytest.approx(math.sqrt(14 / 14.25))
    assert fro_retention(S_KOHYA, 3) == pytest.approx(0.9912, abs=1e-4)  # resize.md §4.2
    assert sum_retention(S_KOHYA, 2) == pytest.approx(5 / 6.5)
    assert fro_retention(S_KOHYA, 8) == 1.0 and fro_retention(S_KOHYA, 0) == 0.0


def test_apply_cap():
    assert apply_cap(7, None) == 7 and apply_cap(7, 4) == 4 and apply_cap(2, 4) == 2


# --- elias score recipes ---------------------------------------------------------------------


def crafted(n=8):
    return torch.tensor([0.5 * 10 ** (-i / 2) for i in range(n)])  # 0.5, 0.1581, 0.05, ...


ELIAS_LAYERS = [  # resize.md §4.3 worked example: (‖W0‖_F, kept at thr=-3.55, kept at thr=-2.2)
    (25.317, 4, 1),
    (17.909, 4, 2),
    (35.79, 4, 1),
]


def test_parse_recipe():
    r = parse_recipe("fro_ckpt=3,spn_lora,thr=-3.55")
    assert r.weights == {"fro_ckpt": 0.75, "spn_lora": 0.25} and r.thr == -3.55 and r.rescale == 1.0
    assert parse_recipe("params=1,size=0.5,thr=-1").size_mib == 0.5
    for bad in ["fro_ckpt=1", "bogus=1,thr=0", "fro_ckpt=1,spn_lora=-1,thr=0", "fro_ckpt=1,thr=x",
                "fro_ckpt=1,thr=0,rescale=0", "subspace=1,thr=0", "fro_ckpt=1,size=0"]:
        with pytest.raises(ChopShopError):
            parse_recipe(bad)


def test_elias_fro_ckpt_worked_example():
    modules = [ModuleSpectrum(crafted(), dims=100, base_fro=fro) for fro, _, _ in ELIAS_LAYERS]
    assert select_by_threshold(modules, parse_recipe("fro_ckpt=1,thr=-3.55")) == [k for _, k, _ in ELIAS_LAYERS]
    assert select_by_threshold(modules, parse_recipe("fro_ckpt=1,thr=-2.2")) == [k for _, _, k in ELIAS_LAYERS]


def test_single_term_recipes():
    S = torch.tensor([4.0, 2.0, 0.4, 0.04, 0.0])
    m = ModuleSpectrum(S, dims=1000, base_spectral=8.0)
    # spn_lora: σ_i >= 10^t·σ_1 (no +1); a score exactly at thr is kept (>=)
    assert select_by_threshold([m], parse_recipe("spn_lora=1,thr=-1.2")) == [3]
    at_third = float(threshold_scores(m, parse_recipe("spn_lora=1,thr=0"))[2])
    assert select_by_threshold([m], ScoreRecipe({"spn_lora": 1.0}, thr=at_third)) == [3]
    assert select_by_threshold([m], ScoreRecipe({"spn_lora": 1.0}, thr=math.nextafter(at_third, 1))) == [2]
    assert select_by_threshold([m], parse_recipe("spn_ckpt=1,thr=-1")) == [2]  # σ >= 0.8
    fro = float(torch.linalg.vector_norm(S))
    assert threshold_scores(m, parse_recipe("fro_lora=1,thr=0"))[0] == pytest.approx(math.log10(4 / fro))
    assert select_by_threshold([m], parse_recipe("params=1,thr=-3")) == [2]  # σ/1000 >= 1e-3
    scores = threshold_scores(m, parse_recipe("params=1,thr=-3,rescale=10"))
    assert scores[0] == pytest.approx(math.log10(40 / 1000)) and scores[-1] == -math.inf
    with pytest.raises(ChopShopError):  # base norms missing
        select_by_threshold([ModuleSpectrum(S, dims=10)], parse_recipe("fro_ckpt=1,thr=-2"))


def test_weights_normalised_mix():
    S = torch.tensor([1.0, 0.1, 0.01])
    m = ModuleSpectrum(S, dims=100, base_fro=10.0, base_spectral=4.0)
    mixed = threshold_scores(m, parse_recipe("fro_ckpt=3,spn_ckpt=1,thr=0"))
    want = torch.log10(S.double()) - 0.75 * math.log10(10.0) - 0.25 * math.log10(4.0)
    assert torch.allclose(mixed, want)


def test_threshold_bounds_and_zero_layers():
    zero = ModuleSpectrum(torch.zeros(4), dims=10, min_rank=1)
    capped = ModuleSpectrum(crafted(), dims=10, max_rank=2)
    dora = ModuleSpectrum(crafted(), dims=10, min_rank=1)
    assert select_by_threshold([zero, capped, dora], parse_recipe("spn_lora=1,thr=5")) == [0, 0, 1]
    assert select_by_threshold([zero, capped, dora], parse_recipe("spn_lora=1,thr=-10")) == [0, 2, 8]


def test_elias_size_mode_worked_example():
    # resize.md §4.3: fro_ckpt=1,size=0.02 on the crafted layers gave ranks {2, 2, 1} at fp16;
    # factor bytes 23,040 for a 20,972-byte target: proj_in 640→640, 3x3 conv 320→320, q_proj 1280→1280.
    dims = [640 + 640, 320 + 320 * 9, 1280 + 1280]
    modules = [ModuleSpectrum(crafted(), dims=d, base_fro=fro) for d, (fro, _, _) in zip(dims, ELIAS_LAYERS)]
    ranks = select_by_recipe(modules, parse_recipe("fro_ckpt=1,size=0.02,thr=9"), bytes_per_value=2)
    assert ranks == [2, 2, 1]
    used = sum(2 * k * d for k, d in zip(ranks, dims))
    assert used == 23_040
    assert used >= 0.02 * 2**20 and used - 0.02 * 2**20 < 2 * max(dims)  # overshoot < one direction


def test_size_greedy_and_budget():
    a = ModuleSpectrum(torch.tensor([8.0, 4.0, 2.0, 1.0]), dims=10)
    b = ModuleSpectrum(torch.tensor([6.0, 3.0, 0.0]), dims=10)
    score = lambda m: torch.log10(torch.as_tensor(m.S, dtype=torch.float64))  # noqa: E731
    # order: 8(a) 6(b) 4(a) 3(b) 2(a) 1(a); each direction costs 10 values · 4 bytes = 40
    assert select_by_size([a, b], 120, 4, score) == [2, 1]  # exactly 3 directions
    assert select_by_size([a, b], 121, 4, score) == [2, 2]  # elias overshoot: one more
    assert select_by_size([a, b], 121, 4, score, overshoot=False) == [2, 1]
    assert select_by_size([a, b], 10_000, 4, score) == [4, 2]  # everything (zeros never)
    assert select_by_size([a, b], 1, 4, score, overshoot=False) == [0, 0]
    a.min_rank, b.max_rank = 3, 1
    assert select_by_size([a, b], 160, 4, score, overshoot=False) == [3, 1]
    with pytest.raises(ChopShopError):
        select_by_size([a, b], 0, 4, score)


def test_size_keeps_prefixes_for_non_monotone_scores():
    m = ModuleSpectrum(torch.tensor([4.0, 2.0, 1.0]), dims=1)
    bumpy = lambda _: torch.tensor([1.0, 0.0, 5.0], dtype=torch.float64)  # noqa: E731
    assert select_by_size([m], 2, 1, bumpy, overshoot=False) == [2]


def test_project_size_rule_energy_per_byte():
    big = ModuleSpectrum(torch.tensor([100.0, 1.0]), dims=100)  # direction 2 carries 0.01% of its energy
    small = ModuleSpectrum(torch.tensor([0.01, 0.01]), dims=100)  # tiny delta, energy split evenly
    cheap = ModuleSpectrum(torch.tensor([1.0, 0.1]), dims=20)  # cheap directions
    assert energy_per_byte_scores(small)[0] == pytest.approx(math.log10(0.5 / 100))
    bpv = 2
    # order by relative energy per value: cheap₁ (0.99/20), big₁ (~1/100), small₁, small₂ (0.5/100),
    # cheap₂ (0.0099/20), big₂ (1e-4/100); costs 40, 200, 200, 200, 40, 200 bytes
    modules = [big, small, cheap]
    assert select_for_size(modules, 640, bpv) == [1, 2, 1]  # the tiny-magnitude module is not starved
    assert select_for_size(modules, 679, bpv) == [1, 2, 1]  # never over budget
    assert select_for_size(modules, 680, bpv) == [1, 2, 2]
    assert select_for_size(modules, 10_000, bpv) == [2, 2, 2]
    assert energy_per_byte_scores(ModuleSpectrum(torch.zeros(3), dims=5)).max() == -math.inf
