"""A full-size SDXL checkpoint with random fp16 weights (UNet, CLIP-L, OpenCLIP CLIP-G), streamed to
bench/out/ once (about 6.5 GB; git-ignored), for benchmarks of the base-relative resize rules."""
from __future__ import annotations

import re

from common import OUT

from chopshop_dev import synth
import torch

from core.safetensors_file import write_file

_G = re.compile(r"^transformer\.text_model\.encoder\.layers\.(\d+)\.(.*)$")


def _clip_g_name(key: str) -> str | None:
    """OpenCLIP checkpoint name of a CLIP-G layer (q/k/v handled by the caller), or None for q/k/v."""
    m = _G.match(key)
    pre = "conditioner.embedders.1.model."
    if key == "transformer.text_projection":
        return pre + "text_projection"
    if not m:
        return pre + key.replace("transformer.text_model.", "") + ".weight"
    layer, rest = m.groups()
    blk = f"{pre}transformer.resblocks.{layer}."
    return {"self_attn.out_proj": blk + "attn.out_proj.weight", "mlp.fc1": blk + "mlp.c_fc.weight",
            "mlp.fc2": blk + "mlp.c_proj.weight"}.get(rest, blk + rest + ".weight" if "_proj" not in rest else None)


def _layout() -> dict[str, tuple[int, ...]]:
    shapes = {"model." + k + ".weight": s for k, s in synth.layers("shapes_sdxl_unet").items()}
    shapes.update({"conditioner.embedders.0." + k + ".weight": s for k, s in synth.layers("shapes_clip_l").items()})
    g = synth.layers("shapes_clip_g")
    for k, s in g.items():
        name = _clip_g_name(k)
        if k == "transformer.text_projection":
            shapes[name] = (s[1], s[0])
        elif name is not None:
            shapes[name] = s
        elif k.endswith("self_attn.q_proj"):
            layer = _G.match(k).group(1)
            shapes[f"conditioner.embedders.1.model.transformer.resblocks.{layer}.attn.in_proj_weight"] = (3 * s[0], s[1])
    return shapes


def sdxl_base_random():
    path = OUT / "sdxl_base_random.safetensors"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    entries = {}
    for i, (name, shape) in enumerate(_layout().items()):
        n = 1
        for d in shape:
            n *= d

        def make(shape=shape, seed=i):
            from core.safetensors_file import tensor_bytes
            g = torch.Generator().manual_seed(seed)
            return tensor_bytes((torch.randn(shape, generator=g) * 0.02).half())
        entries[name] = ("F16", tuple(shape), 2 * n, make)
    write_file(path, entries, {"modelspec.architecture": "stable-diffusion-xl-v1-base"})
    return path
