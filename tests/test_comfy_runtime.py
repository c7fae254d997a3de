"""The ComfyUI runtime itself: the server starts with this pack linked into custom_nodes, and the tiny
checkpoint renders through stock nodes, with a visible difference from the tiny LoRA."""
import io

import numpy as np
import pytest

from chopshop_dev.comfy_runtime import REPO, ComfyServer, make_base_dir
from chopshop_dev.tiny_sd15 import CKPT_NAME, LORA_NAME, ensure_tiny_checkpoint, ensure_tiny_lora

pytestmark = pytest.mark.comfy


def render_prompt(lora, seed=42, steps=3, prefix="rt"):
    """CheckpointLoaderSimple -> [LoraLoader] -> CLIPTextEncode x2 -> KSampler 64x64 -> VAEDecode -> SaveImage."""
    p = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT_NAME}}}
    model, clip = ["1", 0], ["1", 1]
    if lora:
        p["2"] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": lora,
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
        model, clip = ["2", 0], ["2", 1]
    p["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": clip}}
    p["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    p["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["6"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}}
    p["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}
    p["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": prefix}}
    return p


def pixels(png):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_server_renders_tiny_checkpoint_with_and_without_lora(tmp_path):
    base = make_base_dir(tmp_path / "base")
    assert (base / "custom_nodes" / "lora-chopshop").resolve() == REPO
    ensure_tiny_checkpoint(base / "models")
    ensure_tiny_lora(base / "models")

    with ComfyServer(base) as srv:
        stats = srv.get("/system_stats")
        assert stats["system"]["comfyui_version"] == "0.3.75"
        info = srv.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]
        assert LORA_NAME in info["lora_name"][0]
        ck = srv.get("/object_info/CheckpointLoaderSimple")["CheckpointLoaderSimple"]["input"]["required"]
        assert CKPT_NAME in ck["ckpt_name"][0]

        # a validation failure comes back as HTTP 400 with a JSON report
        status, body = srv.post_prompt(render_prompt("no_such_lora.safetensors"))
        assert status == 400 and body["node_errors"], body

        plain = srv.run_prompt(render_prompt(None, prefix="plain"))
        with_lora = srv.run_prompt(render_prompt(LORA_NAME, prefix="lora"))
        img_plain, = [pixels(b) for b in srv.output_images(plain)]
        img_lora, = [pixels(b) for b in srv.output_images(with_lora)]
        log = srv.log_text()

    assert img_plain.shape == img_lora.shape == (64, 64, 3)
    for img in (img_plain, img_lora):
        assert 10 < img.mean() < 245 and img.std() > 1, "render is blank or saturated"
    diff = float(np.abs(img_plain - img_lora).mean())
    print(f"server start {srv.start_seconds:.1f} s, mean |plain - lora| = {diff:.1f} / 255")
    assert diff > 5.0, f"LoRA barely changes the image (mean |diff| {diff:.2f} / 255)"
    # every LoRA key was mapped onto the model (ComfyUI logs the ones it cannot place)
    assert "lora key not loaded" not in log, log[-3000:]
