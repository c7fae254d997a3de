"""Block Impact Sweep (Chop Shop) in-process inside the real ComfyUI 0.3.75, on the tiny SDXL-family model.

The LoRA is the tiny SDXL LoCon with every module's ``up`` factor set to exactly 0 except in OUT01 and OUT04:
its weight delta is non-zero in those two blocks only. Solo and knock-out sweeps must rank them first, give
every other block an impact of exactly 0 with a render bit-identical to the no-LoRA (solo) or full-LoRA
(knock-out) render, and suggest a vector keeping exactly those two blocks. Renders are checked against
ComfyUI's stock route (Block Chop -> Apply LoRA -> KSampler). Progress, Cancel and bad input are checked too.
"""
import json
import sys

import numpy as np
import pytest
import torch

from chopshop_dev.tiny_sdxl import LORA_NAME

pytestmark = pytest.mark.comfy

LIVE = ("OUT01", "OUT04")
STEPS = 2
SEED = 7


@pytest.fixture(scope="module")
def comfy(comfy_sdxl):
    comfy_sdxl.sweep = comfy_sdxl.N["ChopShopBlockSweep"]
    return comfy_sdxl


@pytest.fixture(scope="module")
def unet(sdxl_unet):
    return sdxl_unet


@pytest.fixture(scope="module")
def two_block_lora(comfy):
    """The tiny SDXL LoRA with exactly-zero up factors outside OUT01 and OUT04 (text encoder zeroed too)."""
    full = comfy.N["ChopShopLoadLoRA"].execute(LORA_NAME).args[0]
    adapters = sys.modules[comfy.pack.__name__ + ".core.adapters"]
    lora_file = sys.modules[comfy.pack.__name__ + ".core.lora_file"]
    sd = {k: full.store.tensor(k).clone() for k in full.store.keys()}
    for m in full.modules:
        if m.block not in LIVE:
            for role in adapters.roles_to_scale(m.kind, m.roles):
                sd[m.roles[role]] = torch.zeros_like(sd[m.roles[role]])
    lora = lora_file.from_tensors(sd, dict(full.metadata), name="two_blocks")
    assert lora.architecture == "sdxl" and len(lora.blocks()) == 20
    return lora


def conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen)}]]


def latent(comfy):
    return comfy.N["EmptyLatentImage"]().generate(64, 64, 1)[0]


def run_sweep(comfy, model, vae, lora, mode, group_size=4, keep_share=0.9):
    with torch.inference_mode():
        out = comfy.sweep.execute(model, lora, vae, conditioning(1), conditioning(2), latent(comfy), SEED, STEPS,
                                  1.0, "euler", "normal", mode, group_size, 1.0, keep_share)
    grid, images, report, vector, chart = out.args
    return {"grid": grid, "images": images, "report": json.loads(report), "vector": vector, "chart": chart,
            "ui": out.ui}


@pytest.fixture(scope="module")
def progress(comfy):
    """Every (value, total) the ComfyUI progress hook receives (as the server's hook would)."""
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(None)


@pytest.fixture(scope="module")
def solo(comfy, unet, two_block_lora, progress):
    model, vae = unet
    progress.clear()
    out = run_sweep(comfy, model, vae, two_block_lora, "solo")
    out["progress"] = list(progress)
    return out


@pytest.fixture(scope="module")
def knockout(comfy, unet, two_block_lora):
    model, vae = unet
    return run_sweep(comfy, model, vae, two_block_lora, "knock-out")


def check_two_blocks(rep, images, same_as):
    blocks = rep["blocks"]
    assert {b["label"].lstrip("-") for b in blocks[:2]} == set(LIVE), [b["label"] for b in blocks[:3]]
    assert all(b["impact"] > 0.05 for b in blocks[:2])
    by_label = {b["label"].lstrip("-"): b for b in blocks}
    assert len(by_label) == 20
    for lab, b in by_label.items():
        if lab in LIVE:
            assert not torch.equal(images[2 + b["index"]], images[same_as])
            continue
        assert b["impact"] == 0.0 and b["impact_pixels"] == 0.0, lab          # exactly 0, not small
        assert b["energy"] == 0.0, lab
        assert torch.equal(images[2 + b["index"]], images[same_as]), lab       # bitwise the same render
    assert rep["suggested_blocks"] == list(LIVE)
    labels = rep["present_blocks"]
    assert rep["suggested_vector"] == "1," + ",".join("1" if lab in LIVE else "0" for lab in labels)


def test_solo_ranks_the_two_live_blocks_first_and_the_rest_exactly_zero(solo):
    rep = solo["report"]
    assert rep["mode"] == "solo" and rep["architecture"] == "sdxl" and rep["renders"] == 22
    assert solo["images"].shape == (22, 64, 64, 3)
    check_two_blocks(rep, solo["images"], same_as=0)
    assert solo["vector"] == rep["suggested_vector"]
    assert not torch.equal(solo["images"][1], solo["images"][0])               # the LoRA does something
    assert sum(b["energy"] for b in rep["blocks"]) == pytest.approx(1.0)


def test_knockout_agrees(solo, knockout):
    rep = knockout["report"]
    assert rep["mode"] == "knock-out"
    check_two_blocks(rep, knockout["images"], same_as=1)
    assert rep["suggested_vector"] == solo["report"]["suggested_vector"]
    assert torch.equal(knockout["images"][0], solo["images"][0]) and torch.equal(knockout["images"][1],
                                                                                   solo["images"][1])


def test_renders_are_comfys_own_route(comfy, unet, two_block_lora, solo):
    """No LoRA, full LoRA and solo OUT04 equal Block Chop -> Apply LoRA -> KSampler -> VAE Decode, bitwise."""
    model, vae = unet
    labels = solo["report"]["present_blocks"]
    only = "1," + ",".join("1" if lab == "OUT04" else "0" for lab in labels)
    chopped = comfy.N["ChopShopBlockChop"].execute(two_block_lora, only, 0.0).args[0]
    index = {b["label"]: b["index"] for b in solo["report"]["blocks"]}
    with torch.inference_mode():
        for m, i in ((model, 0), (comfy.N["ChopShopApplyLoRA"].execute(model, two_block_lora, 1.0, 0.0).args[0], 1),
                     (comfy.N["ChopShopApplyLoRA"].execute(model, chopped, 1.0, 0.0).args[0], 2 + index["OUT04"])):
            (out,) = comfy.N["KSampler"]().sample(m, SEED, STEPS, 1.0, "euler", "normal", conditioning(1),
                                                  conditioning(2), latent(comfy))
            assert torch.equal(vae.decode(out["samples"])[0], solo["images"][i]), i


def test_grid_has_one_labelled_tile_per_render(comfy, solo):
    chart_mod = sys.modules[comfy.pack.__name__ + ".core.sweep_chart"]
    grid = solo["grid"][0]
    lay = chart_mod.grid_layout(22, 64, 64, 3)
    assert tuple(grid.shape) == (lay["size"][1], lay["size"][0], 3)
    from PIL import Image
    bg = grid[-1, -1]
    for i, ((x0, y0, x1, y1), (lx0, ly0, lx1, ly1)) in enumerate(zip(lay["tiles"], lay["labels"])):
        img = solo["images"][i]
        want = Image.fromarray((img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).resize(
            (x1 - x0, y1 - y0), Image.NEAREST)
        got = (grid[y0:y1, x0:x1] * 255).round().to(torch.uint8).numpy()
        assert (got == np.asarray(want)).all(), i
        strip = grid[ly0:ly1, lx0:lx1]
        assert ((strip - bg).abs().sum(-1) > 0.1).sum() > 30, f"tile {i} has no label"
    assert solo["chart"].shape[0] == 1 and solo["chart"].shape[2] == 720
    ui = solo["ui"]
    assert len(ui["images"]) == 2 and ui["chopshop_sweep"][0]["suggested_vector"] == solo["vector"]


def test_one_progress_bar_over_every_render(solo):
    calls = solo["progress"]
    total = 22 * STEPS
    assert calls and all(t == total for _, t in calls)
    values = [v for v, _ in calls]
    assert values == sorted(values) and values[-1] == total


def test_variants_patch_only_the_weights_that_change(comfy, unet, two_block_lora, knockout, monkeypatch):
    """On the CPU one clone carries every variant: ComfyUI loads it once (the no-LoRA render), each LoRA'd
    weight is computed once (patch_weight_to_device), and the renders are bitwise those of ComfyUI's own
    path (a fresh clone per variant, every weight re-patched at each load)."""
    model, vae = unet
    patcher = sys.modules[comfy.pack.__name__ + ".nodes.sweep_patcher"]
    block_sweep = sys.modules[comfy.pack.__name__ + ".nodes.block_sweep"]
    mp = comfy.model_patcher.ModelPatcher
    calls = {"load": 0, "patch": []}
    load, patch = mp.load, mp.patch_weight_to_device

    def counting_load(self, *a, **kw):
        calls["load"] += 1
        return load(self, *a, **kw)

    def counting_patch(self, key, *a, **kw):
        if key in self.patches:
            calls["patch"].append(key)
        return patch(self, key, *a, **kw)

    monkeypatch.setattr(mp, "load", counting_load)
    monkeypatch.setattr(mp, "patch_weight_to_device", counting_patch)
    fast = run_sweep(comfy, model, vae, two_block_lora, "knock-out")
    lora_keys = {k if isinstance(k, str) else k[0]
                 for group in block_sweep.split_patches(model, two_block_lora, "sdxl").values() for k in group}
    assert calls["load"] <= 1                                   # the no-LoRA render, if the model was not loaded
    assert sorted(calls["patch"]) == sorted(lora_keys)          # each LoRA'd weight once, no other
    assert torch.equal(fast["images"], knockout["images"])
    monkeypatch.setattr(patcher.VariantPatcher, "can_switch", lambda self, changed: False)
    calls["load"] = 0
    comfys_own = run_sweep(comfy, model, vae, two_block_lora, "knock-out")
    assert calls["load"] >= 21
    assert torch.equal(comfys_own["images"], fast["images"])
    assert comfys_own["report"] == fast["report"]


@pytest.fixture(scope="module")
def groups(comfy, unet, two_block_lora):
    """A groups sweep, with the input model's OUT01 weights captured before (unpatched) and after."""
    model, vae = unet
    comfy.model_management.load_models_gpu([model])          # the plain model (earlier sweeps left a clone)
    params = {k: v for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.output_blocks.1.")}
    before = {k: v.clone() for k, v in params.items()}
    out = run_sweep(comfy, model, vae, two_block_lora, "groups")
    out["params"], out["before"] = params, before
    return out


def test_patching_clones_and_leaves_the_model_alone(comfy, unet, groups):
    """Variants are clones with added patches: the input model keeps no patches and its weights (the same
    tensors, not a copy) return to their values."""
    model, _ = unet
    assert model.patches == {}
    comfy.model_management.load_models_gpu([model])          # the unpatched model loaded again
    after = model.model.state_dict()
    for k, v in groups["params"].items():
        assert after[k] is v or after[k].data_ptr() == v.data_ptr(), k
        assert torch.equal(after[k], groups["before"][k]), k


def test_groups_mode_on_the_unet(groups):
    rep = groups["report"]
    assert [b["label"] for b in rep["blocks"]][0] == "OUT"
    assert {b["label"]: b["impact"] for b in rep["blocks"]}["IN"] == 0.0
    assert rep["suggested_blocks"] == [f"OUT{i:02d}" for i in range(9)]
    assert groups["images"].shape[0] == 5


def test_cancel_inside_and_between_renders(comfy, unet, two_block_lora):
    model, vae = unet
    mm = comfy.model_management
    seen = []

    def hook(value, total, preview, **kw):
        seen.append(value)
        if value == 3:                       # inside the second render
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_sweep(comfy, model, vae, two_block_lora, "solo")
        assert max(seen) <= 4
        seen.clear()
        mm.interrupt_current_processing(True)  # Cancel pressed before the node starts
        with pytest.raises(mm.InterruptProcessingException):
            run_sweep(comfy, model, vae, two_block_lora, "solo")
        assert seen == []
    finally:
        mm.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(None)


def test_bad_input_is_one_clear_error_before_any_render(comfy, unet, two_block_lora, monkeypatch):
    model, vae = unet
    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **kw: calls.append(value))
    lf = sys.modules[comfy.pack.__name__ + ".core.lora_file"]
    try:
        from chopshop_dev.tiny_models import build_lora
        from chopshop_dev.tiny_sd15 import lora_modules
        sd15 = lf.from_tensors(build_lora(lora_modules(), 0), {}, name="sd15")
        assert sd15.architecture == "sd15"
        with pytest.raises(Exception, match=r"the LoRA is SD1\.5 \(sd15\) but the model is SDXL \(sdxl\) "
                                            r"\[Segmind_Vega\]"):
            run_sweep(comfy, model, vae, sd15, "solo")
        te_only = lf.from_tensors({k: two_block_lora.store.tensor(k) for k in two_block_lora.store.keys()
                                   if k.startswith("lora_te")}, {}, name="te")
        with pytest.raises(Exception, match=r"no block modules"):
            run_sweep(comfy, model, vae, te_only, "solo")
        with pytest.raises(Exception, match=r"group_size must be a whole number >= 1, got 0"):
            run_sweep(comfy, model, vae, two_block_lora, "groups", group_size=0)
        with pytest.raises(Exception, match=r"keep_share must be a number in \(0, 1\]"):
            run_sweep(comfy, model, vae, two_block_lora, "solo", keep_share=0)
        sweep_mod = sys.modules[comfy.pack.__name__ + ".core.sweep"]
        monkeypatch.setattr(sweep_mod, "MAX_RENDERS", 21)
        with pytest.raises(Exception, match=r"this solo sweep needs 22 renders \(more than 21\); use mode 'groups'"):
            run_sweep(comfy, model, vae, two_block_lora, "solo")
        assert calls == []                   # nothing was rendered
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
