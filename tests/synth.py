"""Synthetic LoRA files built from the real layer names and shapes of ComfyUI's model classes.

The layer tables (``core/data/shapes_*.json.gz``) were read from ComfyUI 0.3.75's own model classes; the
tensors are random. Module names follow each trainer's convention; ComfyUI's key maps (same folder) give
the alias names for the styles that only differ by spelling.
"""
from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import save_file

DATA = Path(__file__).resolve().parent.parent / "core" / "data"


@lru_cache(maxsize=None)
def data(stem: str) -> dict:
    with gzip.open(DATA / f"{stem}.json.gz", "rt") as f:
        return json.load(f)


def layers(stem: str) -> dict[str, tuple[int, ...]]:
    """Layer name -> weight shape, in model order."""
    return {k: tuple(v["weight"]) for k, v in data(stem)["layers"].items()}


def kohya_unet(layer: str) -> str:
    return "lora_unet_" + layer.removeprefix("diffusion_model.").replace(".", "_")


def in_blocks(layer: str, pattern: str) -> bool:
    return re.match(pattern, layer) is not None


SDXL_BLOCKS = r"^diffusion_model\.(input_blocks\.[1-8]|middle_block\.\d|output_blocks\.\d)\."


def module_tensors(shape: tuple[int, ...], adapter: str, rank: int, gen: torch.Generator,
                   alpha: float | None = None, dtype=torch.float16, scale: float = 0.05,
                   dora: bool = False, family=(".lora_up.weight", ".lora_down.weight")) -> dict[str, torch.Tensor]:
    """Tensors of one module (suffix -> tensor) for a layer of ``shape`` ((out, in) or (out, in, kh, kw))."""
    out, rest = shape[0], shape[1:]
    in_ = rest[0]
    kernel = rest[1:]
    r = lambda *s: (torch.randn(*s, generator=gen) * scale).to(dtype)  # noqa: E731
    t: dict[str, torch.Tensor] = {}
    if adapter in ("lora", "locon"):
        if kernel:
            t[family[1]] = r(rank, in_, *kernel)
            t[family[0]] = r(out, rank, *([1] * len(kernel)))
        else:
            t[family[1]] = r(rank, in_)
            t[family[0]] = r(out, rank)
    elif adapter == "tucker":
        assert kernel, "tucker needs a conv layer"
        t[".lora_down.weight"] = r(rank, in_, 1, 1)
        t[".lora_mid.weight"] = r(rank, rank, *kernel)
        t[".lora_up.weight"] = r(out, rank, 1, 1)
    elif adapter == "loha":
        flat = in_ * (int(torch.tensor(kernel).prod()) if kernel else 1)
        t[".hada_w1_a"], t[".hada_w1_b"] = r(out, rank), r(rank, flat)
        t[".hada_w2_a"], t[".hada_w2_b"] = r(out, rank), r(rank, flat)
    elif adapter == "lokr":
        a = _factor(out)
        c = _factor(in_)
        t[".lokr_w1"] = r(a, c)
        t[".lokr_w2_a"] = r(out // a, rank)
        flat2 = (in_ // c) * (int(torch.tensor(kernel).prod()) if kernel else 1)
        t[".lokr_w2_b"] = r(rank, flat2)
    elif adapter == "full":
        t[".diff"] = r(*shape)
    else:
        raise ValueError(adapter)
    if alpha is not None and adapter != "full":
        t[".alpha"] = torch.tensor(float(alpha), dtype=dtype)
    if dora:
        t[".dora_scale"] = (1 + r(out, *([1] * len(rest)))).to(dtype)
    return t


def _factor(n: int) -> int:
    """The LyCORIS-style balanced factor a of n = a*b with a <= b (a small first Kronecker factor)."""
    best = 1
    for a in range(1, int(n ** 0.5) + 1):
        if n % a == 0:
            best = a
    return best


def build(layer_shapes: dict[str, tuple[int, ...]], name_fn, adapter="lora", rank=4, alpha=None, seed=0,
          dtype=torch.float16, conv_adapter=None, **kw) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for layer, shape in layer_shapes.items():
        ad = conv_adapter if (conv_adapter and len(shape) > 2 and shape[2:] != (1, 1)) else adapter
        for suffix, tensor in module_tensors(shape, ad, rank, gen, alpha, dtype, **kw).items():
            sd[name_fn(layer) + suffix] = tensor
    return sd


def clip_mlp(prefix: str, stem: str) -> dict[str, tuple[int, ...]]:
    """CLIP fc1/fc2 layers under a kohya text-encoder prefix: {'lora_te1_text_model_..._mlp_fc1': shape}."""
    out = {}
    for k, shape in layers(stem).items():
        if re.search(r"\.mlp\.fc[12]$", k):
            out[prefix + k.removeprefix("transformer.").replace(".", "_")] = shape
    return out


def clip_all(prefix: str, stem: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for k, shape in layers(stem).items():
        if re.search(r"\.(mlp\.fc[12]|self_attn\.(q|k|v|out)_proj)$", k):
            out[prefix + k.removeprefix("transformer.").replace(".", "_")] = shape
    return out


def sdxl_lycoris_full(te: str = "mlp", rank: int = 8, conv_rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The seed file: SDXL LyCORIS LoCon preset=full (788 UNet modules) + text-encoder MLPs (88 modules)."""
    unet = {k: s for k, s in layers("shapes_sdxl_unet").items() if in_blocks(k, SDXL_BLOCKS)}
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for layer, shape in unet.items():
        r = conv_rank if len(shape) == 4 and shape[2:] != (1, 1) else rank
        for suffix, t in module_tensors(shape, "locon", r, gen, alpha=4.0).items():
            sd[kohya_unet(layer) + suffix] = t
    pick = clip_mlp if te == "mlp" else clip_all
    if te:
        tel = {**pick("lora_te1_", "shapes_clip_l"), **pick("lora_te2_", "shapes_clip_g")}
        for name, shape in tel.items():
            for suffix, t in module_tensors(shape, "lora", rank, gen, alpha=4.0).items():
                sd[name + suffix] = t
    return sd


SEED_META = {"ss_network_module": "lycoris.kohya", "ss_network_dim": "8", "ss_network_alpha": "4",
             "ss_network_args": json.dumps({"preset": "full", "conv_dim": "256", "conv_alpha": "4", "algo": "locon"}),
             "ss_base_model_version": "sdxl_base_v1-0", "ss_output_name": "yifftoolkit-schnell"}


def write(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata=metadata)
    return path
