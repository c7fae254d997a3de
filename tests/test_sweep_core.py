"""Block Impact Sweep core (no ComfyUI): variants, grouping, preset variants, model checks, impacts, ranking,
the suggested vector (against a brute-force oracle) and the grid / chart pictures, for the SD1.5, SDXL, Flux,
Wan, Qwen-Image and Z-Image layouts."""
import itertools
import json

import pytest
import torch

from chopshop_dev import synth
from core.architectures import full_layout
from core.errors import ChopShopError
from core.lora_file import from_tensors
from core.presets import load_presets
from core.sweep import MAX_RENDERS, block_groups, check_model, model_architectures, plan_sweep, runs
from core.sweep_chart import grid, grid_layout, impact_chart
from core.sweep_impact import energy_shares, impacts, report, suggest, tile_labels
from core.vector import parse_vector

DIT_GROUPS = {  # architecture, group_size -> expected group names (the layout's full block list)
    ("flux", 4): [f"D{i:02d}-D{min(i + 3, 18):02d}" for i in range(0, 19, 4)]
                 + [f"S{i:02d}-S{min(i + 3, 37):02d}" for i in range(0, 38, 4)],
    ("wan21_14b", 4): [f"B{i:02d}-B{i + 3:02d}" for i in range(0, 40, 4)],
    ("wan21_1_3b", 7): [f"B{i:02d}-B{min(i + 6, 29):02d}" for i in range(0, 30, 7)],
    ("qwen_image", 8): [f"B{i:02d}-B{min(i + 7, 59):02d}" for i in range(0, 60, 8)],
    ("z_image", 4): [f"B{i:02d}-B{min(i + 3, 29):02d}" for i in range(0, 30, 4)],
}


def layout(arch):
    return list(full_layout(arch))


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux", "wan21_14b", "wan21_1_3b", "qwen_image", "z_image"])
def test_solo_and_knockout_variants_cover_every_block_once(arch):
    labels = layout(arch)
    solo = plan_sweep(arch, labels, "solo")
    assert [v.name for v in solo.variants] == labels
    assert len(solo.renders()) == len(labels) + 2
    for v, lab in zip(solo.variants, labels):
        assert v.weights == {b: float(b == lab) for b in labels} and v.others == 0.0 and v.blocks == (lab,)
    ko = plan_sweep(arch, labels, "knock-out")
    assert [v.name for v in ko.variants] == [f"-{lab}" for lab in labels]
    for v, lab in zip(ko.variants, labels):
        assert v.weights == {b: float(b != lab) for b in labels} and v.others == 1.0 and v.blocks == (lab,)
    base, full = solo.renders()[:2]
    assert set(base.weights.values()) == {0.0} and base.others == 0.0
    assert set(full.weights.values()) == {1.0} and full.others == 1.0


@pytest.mark.parametrize("arch,expected", [
    ("sd15", {"IN": [f"INP{i:02d}" for i in range(1, 12)], "MID": ["MID00", "MID01", "MID02"],
              "OUT": [f"OUT{i:02d}" for i in range(12)]}),
    ("sdxl", {"IN": [f"INP{i:02d}" for i in range(1, 9)], "MID": ["MID00", "MID01", "MID02"],
              "OUT": [f"OUT{i:02d}" for i in range(9)]}),
])
def test_unet_groups_are_in_mid_out_whatever_the_group_size(arch, expected):
    for gs in (1, 4, 50):
        p = plan_sweep(arch, layout(arch), "groups", gs)
        assert {v.name: list(v.blocks) for v in p.variants} == expected
        for v in p.variants:
            assert v.others == 0.0 and v.kept() == list(v.blocks)


@pytest.mark.parametrize("arch,gs", list(DIT_GROUPS))
def test_dit_groups_are_runs_within_a_section(arch, gs):
    labels = layout(arch)
    p = plan_sweep(arch, labels, "groups", gs)
    assert [v.name for v in p.variants] == DIT_GROUPS[(arch, gs)]
    covered = [b for v in p.variants for b in v.blocks]
    assert covered == labels                                      # every block once, in model order
    for v in p.variants:
        assert 1 <= len(v.blocks) <= gs and len({b[0] for b in v.blocks}) == 1   # never across D/S
        idx = [labels.index(b) for b in v.blocks]
        assert idx == list(range(idx[0], idx[0] + len(idx)))     # consecutive


@pytest.mark.parametrize("arch,style", [("flux", "kohya"), ("wan21_14b", "musubi"), ("qwen_image", "diffsynth"),
                                        ("z_image", "ai_toolkit"), ("sdxl", "kohya"), ("sd15", "kohya")])
def test_variants_of_a_real_lora_with_some_blocks(arch, style):
    """A LoRA training a few blocks: variants follow the blocks present (numeric order), not the layout."""
    lora = from_tensors(synth.make_style(style, arch, te=False).sd)
    assert lora.architecture == arch
    present = lora.blocks()
    assert 3 <= len(present) < len(layout(arch))
    assert [v.name for v in plan_sweep(arch, present, "solo").variants] == present
    groups = plan_sweep(arch, present, "groups", 2).variants
    assert [b for v in groups for b in v.blocks] == present
    if arch not in ("sd15", "sdxl"):
        assert [v.name for v in groups] == [n for n, _ in runs(present, 2)]
    shares = energy_shares(lora)
    assert set(shares) == set(present) and sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux", "wan21_14b", "wan21_1_3b", "qwen_image", "z_image"])
def test_preset_variants_are_the_presets_of_the_architecture(arch):
    presets = load_presets()
    mine = [p for p in presets.values() if p.layout == arch]
    assert mine, arch
    labels = layout(arch)
    plan = plan_sweep(arch, labels, "presets", presets=presets)
    assert [v.name for v in plan.variants] == [p.name for p in mine]
    for v, p in zip(plan.variants, mine):
        assert v.others == 1.0
        for lab in labels:
            assert v.weights[lab] == p.global_weight * p.weights.get(lab, 1.0)


def test_flux_presets_split_double_and_single():
    plan = plan_sweep("flux", layout("flux"), "presets")
    by = {v.name: v for v in plan.variants}
    assert by["Flux Double only"].kept() == [f"D{i:02d}" for i in range(19)]
    assert by["Flux Single only"].kept() == [f"S{i:02d}" for i in range(38)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", None, True])
def test_group_size_below_one_or_not_whole_is_refused(bad):
    with pytest.raises(ChopShopError, match=r"group_size must be a whole number >= 1"):
        plan_sweep("flux", layout("flux"), "groups", bad)


def test_bad_mode_and_no_blocks():
    with pytest.raises(ChopShopError, match=r"unknown sweep mode 'blocks'; valid: solo, knock-out, groups, presets"):
        plan_sweep("sdxl", layout("sdxl"), "blocks")
    with pytest.raises(ChopShopError, match=r"no block modules.*nothing to sweep"):
        plan_sweep("sdxl", [], "solo")


def test_more_than_200_renders_asks_for_a_group_size():
    labels = [f"B{i:02d}" for i in range(250)]
    for mode in ("solo", "knock-out"):
        with pytest.raises(ChopShopError) as e:
            plan_sweep("qwen_image", labels, mode)
        assert f"needs 252 renders (more than {MAX_RENDERS})" in str(e.value)
        assert "use mode 'groups' with a group_size of at least 2" in str(e.value)
    with pytest.raises(ChopShopError, match=r"set a larger group_size \(at least 2\)"):
        plan_sweep("qwen_image", labels, "groups", 1)
    assert len(plan_sweep("qwen_image", labels, "groups", 2).renders()) == 127
    assert len(plan_sweep("qwen_image", labels[:198], "solo").renders()) == 200   # the limit itself is fine


def test_presets_mode_without_presets_for_the_layout():
    with pytest.raises(ChopShopError, match=r"no preset is made for Lumina 2 \(lumina2\)"):
        plan_sweep("lumina2", layout("lumina2"), "presets")


def test_model_architectures_from_comfy_class_names():
    assert model_architectures(["Segmind_Vega", "SDXL", "BASE", "object"]) == ("sdxl",)
    assert model_architectures(["SD15", "BASE"]) == ("sd15",)
    assert model_architectures(["FluxSchnell", "Flux", "BASE"]) == ("flux",)
    assert model_architectures(["Flux2", "Flux", "BASE"]) is None
    assert model_architectures(["WAN21_T2V", "BASE"], {"dim": 5120}) == ("wan21_14b",)
    assert model_architectures(["WAN22_T2V", "WAN21_T2V"], {"dim": 1536}) == ("wan21_1_3b",)
    assert model_architectures(["ZImage", "Lumina2", "BASE"]) == ("z_image",)
    assert model_architectures(["QwenImage", "BASE"]) == ("qwen_image",)
    assert model_architectures(["AuraFlow", "BASE"]) is None
    check_model("sdxl", ("sdxl",), "SDXL")
    check_model("sdxl", None, "AuraFlow")       # unknown models are left to the layer-match check
    with pytest.raises(ChopShopError) as e:
        check_model("sdxl", ("sd15",), "SD15")
    assert "the LoRA is SDXL (sdxl) but the model is SD1.5 (sd15)" in str(e.value)


def renders(values):
    """Constant 'latents' (1, 4, 2, 2) with the given values."""
    return [torch.full((1, 4, 2, 2), float(v)) for v in values]


def test_impacts_follow_the_definitions():
    labels = ["OUT01", "OUT04", "OUT05"]
    solo = plan_sweep("sdxl", labels, "solo")
    # base 0, full 4; solo renders 3, 0 (bit-identical to base), 1
    imp, gap, d = impacts(solo, renders([0, 4, 3, 0, 1]))
    assert d == 4.0 and imp == [0.75, 0.0, 0.25] and gap == [0.25, 1.0, 0.75]
    ko = plan_sweep("sdxl", labels, "knock-out")
    imp, gap, d = impacts(ko, renders([0, 4, 1, 4, 3]))
    assert imp == [0.75, 0.0, 0.25] and gap == imp
    # the LoRA changes nothing: impacts 0 and a warning, not a division by zero
    rep = report(solo, {lab: 1 / 3 for lab in labels}, renders([2, 2, 2, 2, 2]))
    assert [r["impact"] for r in rep["blocks"]] == [0.0, 0.0, 0.0]
    assert any("renders exactly like no LoRA" in w for w in rep["warnings"])


def oracle_fewest(impact: dict[str, float], keep: float) -> set[str]:
    """The smallest set of blocks whose impacts reach keep x total (brute force; ties: larger sum)."""
    total = sum(impact.values())
    for k in range(1, len(impact) + 1):
        ok = [c for c in itertools.combinations(impact, k) if sum(impact[b] for b in c) >= keep * total - 1e-12]
        if ok:
            return set(max(ok, key=lambda c: sum(impact[b] for b in c)))
    return set(impact)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("keep", [0.5, 0.8, 0.9, 1.0])
def test_suggested_vector_keeps_the_fewest_blocks_reaching_keep_share(seed, keep):
    labels = layout("sdxl")
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(len(labels), generator=gen) ** 3
    raw[torch.rand(len(labels), generator=gen) < 0.4] = 0           # exact zeros, like untrained blocks
    impact = dict(zip(labels, raw.tolist()))
    plan = plan_sweep("sdxl", labels, "solo")
    kept, vector, _, chosen = suggest(plan, list(impact.values()), [0.0] * len(labels), keep)
    expected = oracle_fewest(impact, keep)
    assert len(kept) == len(expected) and sum(impact[b] for b in kept) == pytest.approx(
        sum(impact[b] for b in expected))
    assert all(impact[b] > 0 for b in kept)
    w = parse_vector(vector, labels, labels).weights                # Block Chop reads it back
    assert {lab for lab, x in w.items() if x == 1.0} == set(kept) and set(w.values()) <= {0.0, 1.0}
    assert sorted(plan.variants[i].name for i in chosen) == sorted(kept)


def test_group_suggestion_keeps_whole_groups():
    labels = layout("flux")
    plan = plan_sweep("flux", labels, "groups", 8)
    imp = [0.0] * len(plan.variants)
    imp[1], imp[4] = 0.7, 0.5                                        # D08-D15 and S16-S23
    kept, vector, _, _ = suggest(plan, imp, [1.0] * len(imp), 0.9)
    assert kept == list(plan.variants[1].blocks) + list(plan.variants[4].blocks)
    assert vector.count("1") == 1 + 16


def test_preset_suggestion_is_the_smallest_preset_close_to_full():
    labels = layout("sdxl")
    plan = plan_sweep("sdxl", labels, "presets")
    names = [v.name for v in plan.variants]
    gap = [0.5] * len(names)
    gap[names.index("All The Layers")] = 0.0
    gap[names.index("Style")] = 0.08
    gap[names.index("Heavy Lifter")] = 0.3
    kept, vector, note, chosen = suggest(plan, [1.0] * len(names), gap, 0.9)
    assert note == "preset: Style" and chosen == [names.index("Style")]
    assert kept == [lab for lab in labels if plan.variants[chosen[0]].weights[lab] > 0]
    kept, vector, note, _ = suggest(plan, [1.0] * len(names), gap, 0.65)
    assert note == "preset: Heavy Lifter" and kept == ["OUT01"]
    gap = [0.5] * len(names)
    kept, vector, note, _ = suggest(plan, [1.0] * len(names), gap, 0.9)
    assert kept == labels and "no preset comes within 10%" in note


@pytest.mark.parametrize("bad", [0, -0.1, 1.01, float("nan")])
def test_keep_share_must_be_in_0_1(bad):
    plan = plan_sweep("sdxl", ["OUT01"], "solo")
    with pytest.raises(ChopShopError, match=r"keep_share must be a number in \(0, 1\]"):
        suggest(plan, [1.0], [0.0], bad)


def test_report_has_the_contract_keys_and_ranks():
    labels = ["INP04", "MID01", "OUT01", "OUT04"]
    plan = plan_sweep("sdxl", labels, "solo")
    shares = {"INP04": 0.1, "MID01": 0.2, "OUT01": 0.3, "OUT04": 0.4}
    lat = renders([0, 10, 1, 0, 6, 4])
    pix = renders([0.5, 0.9, 0.5, 0.5, 0.8, 0.6])
    rep = json.loads(json.dumps(report(plan, shares, lat, pix, 0.9)))     # JSON-ready
    assert {"mode", "architecture", "blocks", "suggested_vector"} <= set(rep)
    assert rep["mode"] == "solo" and rep["architecture"] == "sdxl"
    assert [r["label"] for r in rep["blocks"]] == ["OUT01", "OUT04", "INP04", "MID01"]
    assert [r["rank"] for r in rep["blocks"]] == [1, 2, 3, 4]
    assert all({"label", "energy", "impact"} <= set(r) for r in rep["blocks"])
    assert rep["blocks"][0]["impact"] == pytest.approx(0.6) and rep["blocks"][0]["energy"] == 0.3
    assert rep["blocks"][0]["impact_pixels"] == pytest.approx(0.3 / 0.4)
    assert rep["suggested_blocks"] == ["OUT01", "OUT04"]               # 0.6 + 0.4 = 1.0 of 1.1 >= 0.9
    assert rep["suggested_vector"] == "1,0,0,1,1"
    labels_text = tile_labels(rep)
    assert len(labels_text) == 6 and labels_text[0][0] == "no LoRA" and labels_text[1][0] == "full LoRA"
    assert labels_text[4][0] == "#1 OUT01" and labels_text[4][2] == "impact 0.60 | px 0.75"


def test_grid_has_one_labelled_tile_per_render():
    from PIL import Image
    n = 7
    colours = [(40 * i, 255 - 30 * i, 100) for i in range(n)]
    images = [Image.new("RGB", (64, 48), c) for c in colours]
    labels = [[f"tile {i}", "energy 1.0%", "impact 0.50"] for i in range(n)]
    img = grid(images, labels, highlight={3})
    lay = grid_layout(n, 64, 48, 3)
    assert img.size == lay["size"] and lay["tile"] == (160, 120)      # small renders are drawn larger
    bg = img.getpixel((img.size[0] - 1, img.size[1] - 1))
    for i, (box, lbox) in enumerate(zip(lay["tiles"], lay["labels"])):
        tile = img.crop(box)
        assert tile.getcolors() == [(160 * 120, colours[i])], i      # the whole tile is render i
        text = img.crop(lbox)
        assert len(text.getcolors(10000)) > 1 and any(c != bg for _, c in text.getcolors(10000)), i
    x0, y0, _, _ = lay["tiles"][3]
    assert img.getpixel((x0 - 2, y0 - 2)) != bg and img.getpixel((lay["tiles"][2][0] - 2, y0 - 2)) == bg


def test_chart_draws_a_row_per_variant():
    labels = layout("sdxl")
    plan = plan_sweep("sdxl", labels, "solo")
    lat = renders([0, 1] + [i / 20 for i in range(20)])
    rep = report(plan, {lab: 1 / 20 for lab in labels}, lat, None, 0.9)
    img = impact_chart(rep)
    assert img.size[0] == 720 and img.size[1] >= 20 * 20
    many = plan_sweep("qwen_image", layout("qwen_image"), "solo")
    rep = report(many, {}, renders([0, 1] + [0.5] * 60), None, 0.9)
    assert impact_chart(rep).size[1] < 70 * 20 + 200
