#!/usr/bin/env python3
"""Tiny random-weight SDXL-family checkpoint + an SDXL LyCORIS (LoCon) LoRA on it, for CPU renders.

    ensure_tiny_sdxl(models_dir)        -> models_dir/checkpoints/tiny_sdxl.safetensors
    ensure_tiny_sdxl_lora(models_dir)   -> models_dir/loras/tiny_sdxl_locon.safetensors

    python -m chopshop_dev.tiny_sdxl MODELS_DIR [--seed N] [--force]

Generated once per recipe into <repo>/.runtime/cache/tiny-sdxl-<hash>/ (see tiny_models.py).

What ComfyUI 0.3.75 sees:
* UNet ``model.diffusion_model.*`` detected as ``supported_models.Segmind_Vega`` (an ``SDXL`` subclass,
  model_base.SDXL): model_channels 320, linear proj_in/out, transformer_depth [0,0,1,1,2,2], context 2048,
  adm_in_channels 2816 are what its ``matches()`` checks. channel_mult is not checked, so [1,1,1]
  keeps every level at 320 channels while keeping SDXL's block layout: input_blocks.1-8 (3 and 6 are
  the downsamplers), middle_block.0-2, output_blocks.0-8 (2 and 5 carry the upsamplers); depth-2
  transformers at the lowest resolution, depth 1 at the middle one, none at full resolution.
* Text encoders: a FULL CLIP-L (``conditioner.embedders.0.transformer.text_model.*``) and a FULL
  OpenCLIP ViT-bigG text tower (``conditioner.embedders.1.model.*``), random. CheckpointLoaderSimple
  builds both from ComfyUI's fixed configs, so nothing smaller loads; they are stored as float8_e4m3fn
  (ComfyUI casts them to its text-encoder dtype on load), about 820 MB of the file.
* VAE: TAESD (tiny_models.taesd_layout).

Because the UNet is narrower than a real SDXL at the two lower resolutions, LoRA modules there do not
have real SDXL shapes. The LoRA's full-resolution modules (INP01, INP02, OUT07, OUT08 resnets) do, so
LoRA Chop Shop's core still detects SDXL and assigns every module its block; the narrower modules are
listed by the inspector as shape notes.

LoRA ``tiny_sdxl_locon.safetensors`` (LyCORIS LoCon naming ``lora_unet_<ldm name>``, fp16, rank 4,
alpha 4): every resnet conv/linear (in_layers.2, emb_layers.1, out_layers.3, skip_connection), the
down/upsampler convs, and every Linear of every transformer (proj_in/out, attn1/attn2 q,k,v,out, ff) in
all 20 SDXL blocks INP01-INP08, MID00-MID02, OUT00-OUT08; plus the MLPs of every CLIP-L (``lora_te1_``)
and CLIP-G (``lora_te2_``) layer. Each delta has about the norm of the weight it patches.
"""
import sys

import torch

from chopshop_dev.tiny_models import (CLIP_L, Layout, TinyFixture, clip_l_layout, materialize, taesd_layout,
                                      text_tower)

CKPT_NAME = "tiny_sdxl.safetensors"
LORA_NAME = "tiny_sdxl_locon.safetensors"

CH = 320                      # model_channels, every level (channel_mult [1,1,1])
TIME_CH = CH * 4
CONTEXT = 2048                # CLIP-L 768 + CLIP-G 1280
ADM = 2816
CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
CLIP_G = dict(width=1280, ff=5120, depth=32)
CLIP_G_NAMES = dict(token="token_embedding.weight", position="positional_embedding", layer="transformer.resblocks.{}.",
                    ln1="ln_1", qkv="attn.in_proj_", out="attn.out_proj", ln2="ln_2", fc1="mlp.c_fc",
                    fc2="mlp.c_proj", final="ln_final")
# transformer depth per input block 1..8 (None = no transformer; 3 and 6 are downsamplers)
INPUT_DEPTH = {1: 0, 2: 0, 4: 1, 5: 1, 7: 2, 8: 2}
OUTPUT_DEPTH = {0: 2, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1, 6: 0, 7: 0, 8: 0}
MIDDLE_DEPTH = 1
UNET_CONFIG = {"model_channels": CH, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 1, 1, 2, 2],
               "context_dim": CONTEXT, "adm_in_channels": ADM, "channel_mult": [1, 1, 1],
               "num_res_blocks": [2, 2, 2], "transformer_depth_middle": MIDDLE_DEPTH}
CLIP_DTYPE = torch.float8_e4m3fn
LORA_META = {"ss_base_model_version": "sdxl_base_v1-0"}


def unet_layout():
    L = Layout("model.diffusion_model.")
    L.linear("time_embed.0", CH, TIME_CH)
    L.linear("time_embed.2", TIME_CH, TIME_CH)
    L.linear("label_emb.0.0", ADM, TIME_CH)
    L.linear("label_emb.0.2", TIME_CH, TIME_CH)
    L.conv("input_blocks.0.0", 4, CH, 3)
    for i in range(1, 9):
        if i in (3, 6):
            L.conv(f"input_blocks.{i}.0.op", CH, CH, 3)
            continue
        L.res_block(f"input_blocks.{i}.0", CH, CH, TIME_CH)
        if INPUT_DEPTH[i]:
            L.spatial_transformer(f"input_blocks.{i}.1", CH, INPUT_DEPTH[i], CONTEXT, linear_proj=True)
    L.res_block("middle_block.0", CH, CH, TIME_CH)
    L.spatial_transformer("middle_block.1", CH, MIDDLE_DEPTH, CONTEXT, linear_proj=True)
    L.res_block("middle_block.2", CH, CH, TIME_CH)
    for i in range(9):
        L.res_block(f"output_blocks.{i}.0", 2 * CH, CH, TIME_CH)   # every skip is 320 channels
        n = 1
        if OUTPUT_DEPTH[i]:
            L.spatial_transformer(f"output_blocks.{i}.1", CH, OUTPUT_DEPTH[i], CONTEXT, linear_proj=True)
            n = 2
        if i in (2, 5):
            L.conv(f"output_blocks.{i}.{n}.conv", CH, CH, 3)
    return L.unet_out(CH)


def clip_g_layout():
    """OpenCLIP ViT-bigG text tower, the key names of an original SDXL checkpoint."""
    L = text_tower("conditioner.embedders.1.model.", CLIP_G, CLIP_G_NAMES)
    L.add("text_projection", (CLIP_G["width"], CLIP_G["width"]), "fan_in", 1.0)
    L.add("logit_scale", (), "const", 4.6052)
    return L.specs


def build_checkpoint(seed):
    gen = torch.Generator().manual_seed(seed)
    sd = materialize(unet_layout(), gen)
    for specs in (clip_l_layout(CLIP_L_PREFIX), clip_g_layout()):
        # generated in fp32 chunks per tensor, stored as fp8 (ComfyUI up-casts on load)
        sd.update({k: v.to(CLIP_DTYPE) for k, v in materialize(specs, gen).items()})
    sd.update(materialize(taesd_layout(), gen))
    return sd


def lora_modules():
    """LyCORIS module name -> (target weight shape, init gain), in model order."""
    mods = {}
    unet = unet_layout()
    for key, (shape, init, gain) in unet.items():
        if init != "fan_in" or not key.endswith(".weight"):
            continue
        rel = key[len("model.diffusion_model."):-len(".weight")]
        if not rel.startswith(("input_blocks.", "middle_block.", "output_blocks.")) or rel.startswith("input_blocks.0."):
            continue
        mods["lora_unet_" + rel.replace(".", "_")] = (shape, gain)
    for prefix, spec in (("lora_te1_text_model_encoder_layers_", CLIP_L), ("lora_te2_text_model_encoder_layers_", CLIP_G)):
        for i in range(spec["depth"]):
            mods[f"{prefix}{i}_mlp_fc1"] = ((spec["ff"], spec["width"]), 1.0)
            mods[f"{prefix}{i}_mlp_fc2"] = ((spec["width"], spec["ff"]), 1.0)
    return mods


# the LoRA's one metadata key is the architecture hint a trainer writes
FIXTURE = TinyFixture("sdxl", __file__, CKPT_NAME, LORA_NAME, build_checkpoint, lora_modules, LORA_META)
cached_file = FIXTURE.cached_file
ensure_tiny_sdxl = FIXTURE.ensure_checkpoint        # models_dir/checkpoints/tiny_sdxl.safetensors
ensure_tiny_sdxl_lora = FIXTURE.ensure_lora         # models_dir/loras/tiny_sdxl_locon.safetensors

if __name__ == "__main__":
    sys.exit(FIXTURE.main(__doc__))
