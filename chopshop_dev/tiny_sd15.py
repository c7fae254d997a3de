#!/usr/bin/env python3
"""Tiny random-weight SD1.5 checkpoint + kohya rank-4 LoRA, for rendering through stock ComfyUI on CPU.

    ensure_tiny_checkpoint(models_dir) -> models_dir/checkpoints/tiny_sd15.safetensors
    ensure_tiny_lora(models_dir)       -> models_dir/loras/tiny_lora.safetensors

    python -m chopshop_dev.tiny_sd15 MODELS_DIR [--seed N] [--force]

Generated once per recipe into <repo>/.runtime/cache/tiny-sd15-<hash>/ (see tiny_models.py).

What ComfyUI 0.3.75 sees (all with the key names of an original SD1.5 checkpoint):
* UNet ``model.diffusion_model.*`` (~25.8 M params): detected as ``supported_models.SD15``, whose
  ``matches()`` pins model_channels 320, context_dim 768 and 1x1-conv proj_in/out; everything else is
  read from the tensors, so one level (channel_mult [1]), one ResBlock per level and depth-1 transformers:
  input_blocks.0 conv, input_blocks.1 = Res + SpatialTransformer, middle_block = Res + ST + Res,
  output_blocks.0/.1 = Res(640->320) + ST.
* Text encoder ``cond_stage_model.transformer.text_model.*``: a FULL CLIP-L (12 x 768) with random
  weights. CheckpointLoaderSimple always builds the CLIP from comfy/sd1_clip_config.json, and any tensor
  not in the file would stay uninitialised, so it cannot be smaller. ~80 % of the file.
* VAE: TAESD (tiny_models.taesd_layout).

LoRA ``tiny_lora.safetensors`` (kohya naming, fp16, rank 4, alpha 4): every Linear / 1x1 conv of the
four SpatialTransformers (``lora_unet_{input_blocks_1_1,middle_block_1,output_blocks_0_1,
output_blocks_1_1}_{proj_in,proj_out,transformer_blocks_0_attn{1,2}_to_{q,k,v,out_0},
transformer_blocks_0_ff_net_{0_proj,2}}``, 48 modules) and every Linear of the 12 CLIP layers
(``lora_te_text_model_encoder_layers_N_{self_attn_{q,k,v,out}_proj,mlp_fc1,mlp_fc2}``, 72 modules).
"""
import sys

import torch

from chopshop_dev.tiny_models import TinyFixture, Layout, clip_l_layout, materialize, taesd_layout

CKPT_NAME = "tiny_sd15.safetensors"
LORA_NAME = "tiny_lora.safetensors"

# fixed by comfy.supported_models.SD15 / sd1_clip_config.json
MODEL_CH = 320
TIME_CH = MODEL_CH * 4
CONTEXT = 768
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# the unet_config ComfyUI derives from the file
UNET_CONFIG = {"model_channels": MODEL_CH, "channel_mult": [1], "num_res_blocks": [1],
               "transformer_depth": [1], "transformer_depth_output": [1, 1],
               "transformer_depth_middle": 1, "context_dim": CONTEXT}
LORA_UNET_BLOCKS = ("input_blocks.1.1", "middle_block.1", "output_blocks.0.1", "output_blocks.1.1")


def unet_layout():
    L = Layout("model.diffusion_model.")
    L.linear("time_embed.0", MODEL_CH, TIME_CH)
    L.linear("time_embed.2", TIME_CH, TIME_CH)
    L.conv("input_blocks.0.0", 4, MODEL_CH, 3)
    for res, st in (("input_blocks.1.0", "input_blocks.1.1"), ("middle_block.0", "middle_block.1")):
        L.res_block(res, MODEL_CH, MODEL_CH, TIME_CH)
        L.spatial_transformer(st, MODEL_CH, 1, CONTEXT, linear_proj=False)
    L.res_block("middle_block.2", MODEL_CH, MODEL_CH, TIME_CH)
    for i in (0, 1):  # each output block takes its skip: 320 + 320 channels
        L.res_block(f"output_blocks.{i}.0", 2 * MODEL_CH, MODEL_CH, TIME_CH)
        L.spatial_transformer(f"output_blocks.{i}.1", MODEL_CH, 1, CONTEXT, linear_proj=False)
    return L.unet_out(MODEL_CH)


def lora_modules():
    """kohya module name -> (target weight shape, fan_in init gain) for every module the LoRA patches."""
    mods = {}
    specs = {**unet_layout(), **clip_l_layout(CLIP_PREFIX)}
    for key, (shape, init, gain) in specs.items():
        if init != "fan_in" or not key.endswith(".weight"):
            continue
        mod = key[: -len(".weight")]
        if mod.startswith("model.diffusion_model."):
            rel = mod[len("model.diffusion_model."):]
            if not rel.startswith(tuple(b + "." for b in LORA_UNET_BLOCKS)) or (len(shape) == 4 and shape[2] != 1):
                continue
            name = "lora_unet_" + rel.replace(".", "_")
        elif ".encoder.layers." in mod:
            name = "lora_te_" + mod[len("cond_stage_model.transformer."):].replace(".", "_")
        else:
            continue
        mods[name] = (shape, gain)
    return mods


def build_checkpoint(seed):
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for specs in (unet_layout(), clip_l_layout(CLIP_PREFIX), taesd_layout()):
        sd.update(materialize(specs, gen))
    return sd


FIXTURE = TinyFixture("sd15", __file__, CKPT_NAME, LORA_NAME, build_checkpoint, lora_modules)
cached_file = FIXTURE.cached_file
ensure_tiny_checkpoint = FIXTURE.ensure_checkpoint   # models_dir/checkpoints/tiny_sd15.safetensors
ensure_tiny_lora = FIXTURE.ensure_lora               # models_dir/loras/tiny_lora.safetensors

if __name__ == "__main__":
    sys.exit(FIXTURE.main(__doc__))
