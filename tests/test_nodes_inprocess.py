"""The Chop Shop nodes called in-process inside the real ComfyUI 0.3.75 (nodes loaded as main.py does) on the
tiny SDXL-family model: applying a chopped LoRA patches exactly the kept blocks' weights (float32, per key),
the unchopped one patches every block, saving + stock loading gives the same patches, renders differ and
are deterministic, inputs are never modified, LORA_MODEL is accepted."""
import re

import pytest
import torch

from chopshop_dev.tiny_sdxl import LORA_NAME

pytestmark = pytest.mark.comfy

GARFIELD_KEPT = {"OUT00", "OUT01", "OUT04", "OUT05"}
BLOCK = re.compile(r"^diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)\.")
PREFIX = {"input_blocks": "INP", "middle_block": "MID", "output_blocks": "OUT"}


def block_of(key):
    m = BLOCK.match(key)
    return f"{PREFIX[m.group(1)]}{int(m.group(2)):02d}" if m else None


@pytest.fixture(scope="module")
def comfy(comfy_sdxl):
    return comfy_sdxl


@pytest.fixture(scope="module")
def unet(sdxl_unet):
    model = sdxl_unet[0]
    assert type(model.model).__name__ == "SDXL"
    assert type(model.model.model_config).__name__ == "Segmind_Vega"
    return sdxl_unet


@pytest.fixture(scope="module")
def loras(comfy):
    lora = comfy.N["ChopShopLoadLoRA"].execute(LORA_NAME).args[0]
    vector, name = comfy.N["ChopShopPresetPicker"].execute("Garfield (Character+Style)", lora).args
    chopped, summary = comfy.N["ChopShopBlockChop"].execute(lora, vector, 1.0, preset_name=name).args
    return lora, chopped, summary


def patched_weights(comfy, model, lora, strength=1.0):
    """{model key: patched float32 weight} for every key the LoRA patches, via comfy.lora.calculate_weight."""
    m2 = comfy.N["ChopShopApplyLoRA"].execute(model, lora, strength, 0.0).args[0]
    sd = model.model.state_dict()
    out = {}
    for key, patches in m2.patches.items():
        w = sd[key].to(torch.float32).clone()
        out[key] = comfy.lora.calculate_weight(patches, w, key)
    return out, sd


def test_chopped_lora_patches_exactly_the_kept_blocks(comfy, unet, loras):
    model, _ = unet
    lora, chopped, summary = loras
    assert "Kept: OUT00, OUT01, OUT04, OUT05" in summary
    full, sd = patched_weights(comfy, model, lora)
    chop, _ = patched_weights(comfy, model, chopped)
    targeted = set(full)
    assert {block_of(k) for k in targeted} == {f"INP{i:02d}" for i in range(1, 9)} | {
        f"MID{i:02d}" for i in range(3)} | {f"OUT{i:02d}" for i in range(9)}
    for key, w in sd.items():
        if not key.startswith("diffusion_model."):
            continue
        base = w.to(torch.float32)
        changed_full = key in full and not torch.equal(full[key], base)
        changed_chop = key in chop and not torch.equal(chop[key], base)
        assert changed_full == (key in targeted), key                        # unchopped: every targeted key
        assert changed_chop == (key in targeted and block_of(key) in GARFIELD_KEPT), key
        if changed_chop:
            assert torch.equal(chop[key], full[key]), key                     # kept blocks untouched


def test_patch_is_w_plus_scaled_up_down(comfy, unet, loras):
    model, _ = unet
    lora = loras[0]
    full, sd = patched_weights(comfy, model, lora, strength=0.5)
    name = "lora_unet_output_blocks_1_1_transformer_blocks_0_attn2_to_k"
    up = lora.store.tensor(name + ".lora_up.weight").float()
    down = lora.store.tensor(name + ".lora_down.weight").float()
    alpha = float(lora.store.tensor(name + ".alpha"))
    key = "diffusion_model.output_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    expect = sd[key].float() + 0.5 * (alpha / up.shape[1]) * (up @ down)
    assert torch.allclose(full[key], expect, atol=1e-6, rtol=1e-5)


def test_saved_and_stock_loaded_lora_patches_identically(comfy, unet, loras, tmp_path):
    model, _ = unet
    chopped = loras[1]
    rel = comfy.N["ChopShopSaveLoRA"].execute(chopped, "inproc/chop").args[0]
    assert rel.startswith("chopshop/inproc/chop_") and rel in comfy.folder_paths.get_filename_list("loras")
    path = comfy.folder_paths.get_full_path_or_raise("loras", rel)
    sd_file = comfy.utils.load_torch_file(path, safe_load=True)
    stock, _ = comfy.sd.load_lora_for_models(model, None, sd_file, 1.0, 0.0)
    ours = comfy.N["ChopShopApplyLoRA"].execute(model, chopped, 1.0, 0.0).args[0]
    assert set(stock.patches) == set(ours.patches)
    msd = model.model.state_dict()
    for key in stock.patches:
        w = msd[key].float()
        a = comfy.lora.calculate_weight(stock.patches[key], w.clone(), key)
        b = comfy.lora.calculate_weight(ours.patches[key], w.clone(), key)
        assert torch.equal(a, b), key


def render(comfy, model, vae, seed=42):
    gen = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 77, 2048, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen)}]]
    (latent,) = comfy.N["EmptyLatentImage"]().generate(64, 64, 1)
    (out,) = comfy.N["KSampler"]().sample(model, seed, 1, 1.0, "euler", "normal", cond, cond, latent)
    return vae.decode(out["samples"])


def test_renders_differ_and_are_deterministic(comfy, unet, loras):
    model, vae = unet
    lora, chopped, _ = loras
    apply = comfy.N["ChopShopApplyLoRA"].execute
    img_full = render(comfy, apply(model, lora, 1.0, 0.0).args[0], vae)
    img_chop = render(comfy, apply(model, chopped, 1.0, 0.0).args[0], vae)
    img_chop2 = render(comfy, apply(model, chopped, 1.0, 0.0).args[0], vae)
    assert img_full.shape == (1, 64, 64, 3)
    assert (img_full - img_chop).abs().mean() * 255 > 1.0
    assert torch.equal(img_chop, img_chop2)


def test_inputs_are_never_modified(comfy, loras):
    full = loras[0]
    lora = comfy.N["ChopShopFromLoraModel"].execute(
        {k: full.store.tensor(k) for k in full.store.keys() if k.startswith("lora_unet_output_blocks_")}).args[0]
    before = {k: lora.store.tensor(k).clone() for k in lora.store.keys()}
    comfy.N["ChopShopBlockChop"].execute(lora, "1," + ",".join(["0.5"] * 20), 0.0)
    comfy.N["ChopShopSVDResize"].execute(lora, "rank", 2, 0, "fp16")
    assert set(lora.store.keys()) == set(before)
    assert all(torch.equal(lora.store.tensor(k), t) for k, t in before.items())


def test_lora_model_dict_is_accepted_and_left_alone(comfy, loras):
    lora = loras[0]
    # full-resolution blocks only: those have real SDXL shapes in the tiny model, so SDXL is detected
    sd = {k: lora.store.tensor(k) for k in lora.store.keys()
          if k.startswith(("lora_unet_output_blocks_7_", "lora_unet_input_blocks_1_", "lora_te1"))}
    keys = list(sd)
    converted = comfy.N["ChopShopFromLoraModel"].execute(sd).args[0]
    assert converted.architecture == "sdxl" and converted.blocks() == ["INP01", "OUT07"]
    text = comfy.N["ChopShopBlockLayoutInspector"].execute(converted).args[0]
    assert "OUT07" in text
    resized = comfy.N["ChopShopSVDResize"].execute(converted, "rank", 2, 0, "fp16").args[0]
    assert resized.modules[0].nominal_rank == 2
    assert list(sd) == keys


def test_fro_ckpt_needs_model_and_errors_are_clear(comfy, loras):
    lora = loras[0]
    with pytest.raises(Exception, match="needs the base model's weights: connect the model input"):
        comfy.N["ChopShopSVDResize"].execute(lora, "fro_ckpt", -3.55, 0, "fp16")
    with pytest.raises(Exception, match="rank must be a whole number"):
        comfy.N["ChopShopSVDResize"].execute(lora, "rank", 2.5, 0, "fp16")
    with pytest.raises(Exception, match="unknown preset"):
        comfy.N["ChopShopPresetPicker"].execute("Garfeld", lora)
    with pytest.raises(Exception, match="is for Flux"):
        comfy.N["ChopShopPresetPicker"].execute("Flux All", lora)
