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


# =============================================================================================================
# Naming styles x architectures (formats.md §4.1). Every generated module name is spelled by the trainer's own
# rule from a real model layer; ``Spec`` records which layer (and fused slice) each name was made for, so tests
# can count blocks independently of the reader.
# =============================================================================================================

from dataclasses import dataclass, field  # noqa: E402

# architecture id -> (shapes stem, key-map stem)
ARCH_DATA = {
    "sd15": ("shapes_sd15_unet", "lorakeys_sd15_unet"),
    "sdxl": ("shapes_sdxl_unet", "lorakeys_sdxl_unet"),
    "sd3_medium": ("shapes_sd3_medium", "lorakeys_sd3_medium"),
    "sd35_medium": ("shapes_sd35_medium", "lorakeys_sd35_medium"),
    "sd35_large": ("shapes_sd35_large", "lorakeys_sd35_large"),
    "flux": ("shapes_flux_dev_transformer", "lorakeys_flux_dev_transformer"),
    "chroma": ("shapes_chroma", "lorakeys_chroma"),
    "hunyuan_video": ("shapes_hunyuan_video", "lorakeys_hunyuan_video"),
    "wan21_1_3b": ("shapes_wan21_t2v_1_3b", "lorakeys_wan21_t2v_1_3b"),
    "wan21_14b": ("shapes_wan21_t2v_14b", "lorakeys_wan21_t2v_14b"),
    "qwen_image": ("shapes_qwen_image", "lorakeys_qwen_image"),
    "z_image": ("shapes_z_image", "lorakeys_z_image"),
}

# A small subset of each model: the numbered blocks kept (all their Linear/Conv layers), plus a few non-block
# layers (pass-through). Chosen so that numeric label order is exercised (OUT09 < OUT10 < OUT11, B02 < B10).
SUBSETS = {
    "sd15": (r"^diffusion_model\.(input_blocks\.(1|3|11)|middle_block\.[01]|output_blocks\.(2|9|10|11))\.",
             ["diffusion_model.time_embed.0", "diffusion_model.out.2"]),
    "sdxl": (r"^diffusion_model\.(input_blocks\.(1|3|4)|middle_block\.2|output_blocks\.(5|6|8))\.",
             ["diffusion_model.time_embed.0", "diffusion_model.label_emb.0.0"]),
    "sd3_medium": (r"^diffusion_model\.joint_blocks\.(0|2|10|23)\.",
                   ["diffusion_model.context_embedder", "diffusion_model.final_layer.linear"]),
    "sd35_medium": (r"^diffusion_model\.joint_blocks\.(0|2|10|23)\.",
                    ["diffusion_model.context_embedder", "diffusion_model.final_layer.linear"]),
    "sd35_large": (r"^diffusion_model\.joint_blocks\.(0|2|10|37)\.",
                   ["diffusion_model.context_embedder", "diffusion_model.final_layer.linear"]),
    "flux": (r"^diffusion_model\.(double_blocks\.(0|2|10|18)|single_blocks\.(0|9|37))\.",
             ["diffusion_model.img_in", "diffusion_model.final_layer.linear"]),
    "chroma": (r"^diffusion_model\.(double_blocks\.(0|2|10|18)|single_blocks\.(0|9|37))\.",
               ["diffusion_model.distilled_guidance_layer.in_proj", "diffusion_model.final_layer.linear"]),
    "hunyuan_video": (r"^diffusion_model\.(double_blocks\.(0|2|19)|single_blocks\.(1|10|39))\.",
                      ["diffusion_model.txt_in.input_embedder", "diffusion_model.final_layer.linear"]),
    "wan21_1_3b": (r"^diffusion_model\.blocks\.(0|2|10|29)\.",
                   ["diffusion_model.text_embedding.0", "diffusion_model.head.head"]),
    "wan21_14b": (r"^diffusion_model\.blocks\.(0|2|10|39)\.",
                  ["diffusion_model.text_embedding.0", "diffusion_model.head.head"]),
    "qwen_image": (r"^diffusion_model\.transformer_blocks\.(0|2|10|59)\.",
                   ["diffusion_model.img_in", "diffusion_model.proj_out"]),
    "z_image": (r"^diffusion_model\.(layers\.(0|2|10|29)|noise_refiner\.0|context_refiner\.1)\.",
                ["diffusion_model.x_embedder", "diffusion_model.final_layer.linear"]),
}


@dataclass
class Mod:
    """One generated module: its name in the file, the model layer it was made for, fused slice if any."""
    name: str
    layer: str                     # "diffusion_model.…", "clip_l.transformer.…", "clip_g.…", "t5xxl.transformer.…"
    shape: tuple[int, ...]         # the shape the module's ΔW has (slice rows for split q/k/v)
    slice: tuple[int, int, int] | None = None
    kind: str = "lora"
    keys: list[str] = field(default_factory=list)
    in_comfy_map: bool = True      # False for the documented spellings ComfyUI's map lacks

    @property
    def component(self) -> str:
        return "unet" if self.layer.startswith("diffusion_model.") else self.layer.split(".", 1)[0]


@dataclass
class Spec:
    style: str
    arch: str
    mods: list[Mod]
    sd: dict[str, torch.Tensor]
    metadata: dict[str, str]


def _target(value) -> tuple[str, tuple[int, int, int] | None] | None:
    if isinstance(value, str):
        return value, None
    if len(value) > 2:          # swap_scale_shift entries: not a plain alias
        return None
    return value[0], (tuple(value[1]) if value[1] else None)


@lru_cache(maxsize=None)
def diffusers_names(arch: str) -> dict[str, list[tuple[str, tuple[int, int, int] | None]]]:
    """layer -> [(diffusers dotted name, slice)], from the diffusers alias family of ComfyUI's key map.

    UNets: the ``unet.`` family (attention projections listed there as ``….processor.to_q`` /
    ``….processor.to_out`` are respelled the way diffusers models name them: ``….to_q`` / ``….to_out.0``).
    Flux/Chroma/SD3/HunyuanVideo/Qwen: the ``transformer.`` family. Z-Image: the ``diffusion_model.`` names
    that differ from their target (split ``to_q/to_k/to_v``, ``to_out.0``); other Z-Image layers keep their
    names. A layer without an alias keeps its own name.
    """
    shapes_stem, km_stem = ARCH_DATA[arch]
    km = data(km_stem)
    family = {"sd15": "unet.", "sdxl": "unet.", "z_image": "diffusion_model."}.get(arch, "transformer.")
    out: dict[str, list] = {}
    for name, value in km.items():
        if not name.startswith(family):
            continue
        t = _target(value)
        if t is None or not t[0].endswith(".weight"):
            continue
        layer, sl = t[0][: -len(".weight")], t[1]
        dotted = name[len(family):]
        if family == "diffusion_model." and "diffusion_model." + dotted == layer:
            continue
        if family == "unet.":
            dotted = re.sub(r"\.processor\.(to_q|to_k|to_v)$", r".\1", dotted)
            dotted = re.sub(r"\.processor\.to_out$", ".to_out.0", dotted)
        out.setdefault(layer, []).append((dotted, sl))
    result = {}
    for layer in layers(shapes_stem):
        al = out.get(layer)
        if not al:
            # no diffusers alias: Z-Image's other layers keep their names; elsewhere the name is unknown
            result[layer] = [(layer.removeprefix("diffusion_model."), None)] if arch == "z_image" else []
        elif any(sl is not None for _, sl in al):
            result[layer] = sorted({a for a in al if a[1] is not None}, key=lambda a: a[1][1])
        else:
            result[layer] = [sorted(al)[0]]   # several plain aliases (e.g. proj_out / norm_out): take one
    return result


def subset_layers(arch: str, non_block: bool = True) -> dict[str, tuple[int, ...]]:
    pattern, extra = SUBSETS[arch]
    all_layers = layers(ARCH_DATA[arch][0])
    sel = {k: s for k, s in all_layers.items() if re.match(pattern, k)}
    if non_block:
        sel.update({k: all_layers[k] for k in extra})
    return sel


# ----------------------------------------------------------------------------------------------- UNet names

def _us(s: str) -> str:
    return s.replace(".", "_")


# style -> (family suffixes (up, down), alpha?, architectures)
STYLE_FAMILY = {
    "kohya": ((".lora_up.weight", ".lora_down.weight"), True),
    "kohya_diffusers": ((".lora_up.weight", ".lora_down.weight"), True),
    "musubi": ((".lora_up.weight", ".lora_down.weight"), True),
    "wan_fun": ((".lora_up.weight", ".lora_down.weight"), True),
    "ai_toolkit": ((".lora_B.weight", ".lora_A.weight"), False),
    "peft": ((".lora_B.weight", ".lora_A.weight"), False),
    "diffsynth": ((".lora_B.default.weight", ".lora_A.default.weight"), False),
    "diffusers_old": (("_lora.up.weight", "_lora.down.weight"), False),
    "simpletuner_lycoris": (None, True),                 # LoKr
    "onetrainer": ((".lora_up.weight", ".lora_down.weight"), True),
    "comfyui": ((".lora_up.weight", ".lora_down.weight"), False),
    "diffusion_pipe": ((".lora_B.weight", ".lora_A.weight"), False),
}

# Which styles apply to which architectures (formats.md §4.1), and the format label the reader reports.
STYLE_ARCHS = {
    "kohya": ["sd15", "sdxl", "sd3_medium", "sd35_large", "flux"],
    "kohya_diffusers": ["sdxl"],
    "musubi": ["hunyuan_video", "wan21_1_3b", "wan21_14b", "qwen_image", "z_image", "flux"],
    "wan_fun": ["wan21_14b"],
    "ai_toolkit": ["flux", "sd3_medium", "wan21_1_3b", "wan21_14b", "qwen_image", "z_image", "chroma"],
    "peft": ["sd15", "sdxl", "flux", "sd35_large", "qwen_image"],
    "diffsynth": ["wan21_1_3b", "wan21_14b", "qwen_image"],
    "diffusers_old": ["sd15", "sdxl"],
    "simpletuner_lycoris": ["sdxl", "flux", "sd3_medium", "qwen_image", "z_image"],
    "onetrainer": ["sdxl", "sd3_medium", "sd35_large", "flux"],
    "comfyui": ["sd15", "sdxl", "sd3_medium", "sd35_medium", "sd35_large", "flux", "chroma", "hunyuan_video",
                "wan21_1_3b", "wan21_14b", "qwen_image", "z_image"],
    "diffusion_pipe": ["hunyuan_video"],
}
UNET_ARCHS = ("sd15", "sdxl")


def _unet_names(style: str, arch: str, layer: str) -> list[tuple[str, tuple | None, bool]]:
    """[(module name, slice, in ComfyUI's map)] for one diffusion-model layer in ``style``."""
    own = layer.removeprefix("diffusion_model.")
    diff = diffusers_names(arch)[layer]
    if style == "comfyui":
        return [(layer, None, True)]
    if style in ("kohya", "musubi", "onetrainer") and arch in ("sd15",):
        return [("lora_unet_" + _us(d), sl, True) for d, sl in diff]          # kohya SD1.x: diffusers names
    if style == "musubi" and arch == "z_image":
        return [("lora_unet_" + _us(d), sl, False) for d, sl in diff]          # needs conversion for ComfyUI
    if style in ("kohya", "musubi") or (style == "onetrainer" and arch in UNET_ARCHS):
        return [("lora_unet_" + _us(own), None, True)]
    if style == "kohya_diffusers":
        return [("lora_unet_" + _us(d), sl, True) for d, sl in diff]
    if style == "wan_fun":
        return [("lora_unet__" + _us(own), None, False)]                       # ComfyUI rewrites lora_unet__
    if style == "ai_toolkit":
        if arch in ("flux", "sd3_medium", "sd35_large"):
            return [("transformer." + d, sl, True) for d, sl in diff]
        names = diff if arch == "z_image" else [(own, None)]
        return [("diffusion_model." + d, sl, True) for d, sl in names]
    if style == "peft":
        if arch in UNET_ARCHS:
            return [("unet." + d, sl, False) for d, sl in diff]               # map lists processor.to_q only
        return [("transformer." + d, sl, True) for d, sl in diff]
    if style == "diffsynth":
        return [(own, None, arch == "qwen_image")]                             # bare names (map: Qwen only)
    if style == "diffusers_old":
        out = []
        for d, sl in diff:
            m = re.match(r"^(.*\.attn[12])\.(to_q|to_k|to_v|to_out\.0)$", d)
            if m:
                out.append((f"unet.{m.group(1)}.processor.{m.group(2).removesuffix('.0')}", sl, True))
        return out
    if style == "simpletuner_lycoris":
        names = diff if arch not in ("qwen_image",) else [(own, None)]
        return [("lycoris_" + _us(d), sl, True) for d, sl in names]
    if style == "onetrainer":
        return [("lora_transformer_" + _us(d), sl, True) for d, sl in diff]
    if style == "diffusion_pipe":
        return [("transformer." + d, sl, True) for d, sl in diff]
    raise ValueError((style, arch))


# ---------------------------------------------------------------------------------------- text-encoder names

# style -> arch -> [(encoder, prefix rule)]; encoders: clip_l, clip_g, t5xxl.
def _te_plan(style: str, arch: str) -> list[tuple[str, str]]:
    sd3 = arch.startswith("sd3")
    if style in ("kohya",):
        return {"sd15": [("clip_l", "lora_te_")], "sdxl": [("clip_l", "lora_te1_"), ("clip_g", "lora_te2_")],
                "flux": [("clip_l", "lora_te1_"), ("t5xxl", "lora_te3_")]}.get(
            arch, [("clip_l", "lora_te1_"), ("clip_g", "lora_te2_"), ("t5xxl", "lora_te3_")] if sd3 else [])
    if style == "onetrainer":
        return {"sdxl": [("clip_l", "lora_te1_"), ("clip_g", "lora_te2_")],
                "flux": [("clip_l", "lora_te1_"), ("t5xxl", "lora_te2_")]}.get(
            arch, [("clip_l", "lora_te1_"), ("clip_g", "lora_te2_"), ("t5xxl", "lora_te3_")] if sd3 else [])
    if style in ("peft", "diffusers_old") and arch in UNET_ARCHS:
        return [("clip_l", "text_encoder.")] + ([("clip_g", "text_encoder_2.")] if arch == "sdxl" else [])
    if style == "comfyui":
        return {"sd15": [("clip_l", "text_encoders.clip_l.")],
                "sdxl": [("clip_l", "text_encoders.clip_l."), ("clip_g", "text_encoders.clip_g.")],
                "flux": [("clip_l", "text_encoders.clip_l."), ("t5xxl", "text_encoders.t5xxl.")]}.get(arch, [])
    return []


TE_LAYER = r"\.(mlp\.fc[12]|self_attn\.(q|k|v|out)_proj|SelfAttention\.[qkvo]|DenseReluDense\.w(i_0|i_1|o))$"
TE_SUBSET = r"(layers|block)\.(0|11)\."


def _te_names(style: str, arch: str) -> list[tuple[str, str, tuple[int, ...], bool]]:
    """[(module name, encoder layer, shape, in ComfyUI's CLIP map)] for the text encoders of ``style``."""
    out = []
    for enc, prefix in _te_plan(style, arch):
        table = layers({"clip_l": "shapes_clip_l", "clip_g": "shapes_clip_g", "t5xxl": "shapes_t5xxl"}[enc])
        for k, shape in table.items():
            if not (re.search(TE_LAYER, k) and re.search(TE_SUBSET, k)):
                continue
            inner = k.removeprefix("transformer.")
            if prefix.endswith("_"):
                name = prefix + _us(inner)
            elif prefix.startswith("text_encoders."):
                name = prefix + k
            else:
                name = prefix + inner
            out.append((name, f"{enc}.{k}", shape, enc != "t5xxl"))
        if style == "onetrainer" and enc == "clip_g":
            out.append(("lora_te2_text_projection", "clip_g.transformer.text_projection",
                        table["transformer.text_projection"], True))
    return out


def make_style(style: str, arch: str, rank: int = 2, seed: int = 0, te: bool = True,
               non_block: bool = True, dtype=torch.float16) -> Spec:
    """A synthetic LoRA of ``arch`` in ``style``: names by the trainer's rule, shapes from the real layers."""
    fam, with_alpha = STYLE_FAMILY[style]
    gen = torch.Generator().manual_seed(seed)
    mods: list[Mod] = []
    sd: dict[str, torch.Tensor] = {}
    entries = []
    for layer, shape in subset_layers(arch, non_block).items():
        for name, sl, in_map in _unet_names(style, arch, layer):
            s = (sl[2], *shape[1:]) if sl else shape
            entries.append((name, layer, s, sl, in_map))
    if te:
        for name, layer, shape, in_map in _te_names(style, arch):
            entries.append((name, layer, shape, None, in_map))
    for name, layer, shape, sl, in_map in entries:
        f = fam
        if style == "diffusers_old" and not layer.startswith("diffusion_model."):
            f = (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight")   # 2023 TE spelling
        if f is None:       # LyCORIS LoKr (SimpleTuner): full w1 + decomposed w2
            kind = "lokr"
            t = module_tensors(shape, "lokr", rank, gen, alpha=float(rank), dtype=dtype)
        else:
            kind = "locon" if len(shape) > 2 else "lora"
            t = module_tensors(shape, kind, rank, gen, alpha=float(rank) / 2 if with_alpha else None, dtype=dtype,
                               family=f)
        keys = [name + suf for suf in t]
        sd.update(zip(keys, t.values()))
        mods.append(Mod(name, layer, tuple(shape), sl, kind, keys, in_map))
    return Spec(style, arch, mods, sd, {})


# ------------------------------------------------------------------------------------------- adapter types

def adapter_tensors(kind: str, shape: tuple[int, ...], rank: int, gen: torch.Generator,
                    dtype=torch.float16, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """Suffix -> tensor for every adapter kind the reader knows (formats.md §2), for a layer of ``shape``."""
    out, in_ = shape[0], (shape[1] if len(shape) > 1 else 1)
    kernel = tuple(shape[2:])
    kk = int(torch.tensor(kernel).prod()) if kernel else 1
    r = lambda *s: (torch.randn(*s, generator=gen) * scale).to(dtype)  # noqa: E731
    a = lambda v: torch.tensor(float(v), dtype=torch.float32)  # noqa: E731
    if kind == "lora":
        return {".lora_down.weight": r(rank, in_), ".lora_up.weight": r(out, rank), ".alpha": a(rank / 2)}
    if kind == "locon":      # conv 3x3 or 1x1, keeps the 4-D shapes
        return {".lora_down.weight": r(rank, in_, *kernel), ".lora_up.weight": r(out, rank, 1, 1), ".alpha": a(1)}
    if kind == "tucker":
        return {".lora_down.weight": r(rank, in_, 1, 1), ".lora_mid.weight": r(rank, rank, *kernel),
                ".lora_up.weight": r(out, rank, 1, 1), ".alpha": a(rank)}
    if kind == "dora":
        return {".lora_down.weight": r(rank, in_), ".lora_up.weight": r(out, rank), ".alpha": a(rank),
                ".dora_scale": (1 + r(out, 1)).to(dtype)}
    if kind == "loha":
        return {".hada_w1_a": r(out, rank), ".hada_w1_b": r(rank, in_ * kk), ".hada_w2_a": r(out, rank),
                ".hada_w2_b": r(rank, in_ * kk), ".alpha": a(rank / 2)}
    if kind == "loha_tucker":
        return {".hada_w1_a": r(rank, out), ".hada_w1_b": r(rank, in_), ".hada_t1": r(rank, rank, *kernel),
                ".hada_w2_a": r(rank, out), ".hada_w2_b": r(rank, in_), ".hada_t2": r(rank, rank, *kernel),
                ".alpha": a(rank)}
    fa, fc = _factor(out), _factor(in_)
    if kind == "lokr":       # full w1, decomposed w2
        return {".lokr_w1": r(fa, fc), ".lokr_w2_a": r(out // fa, rank), ".lokr_w2_b": r(rank, in_ // fc * kk),
                ".alpha": a(rank / 2)}
    if kind == "lokr_both":  # both decomposed: w2's rank wins
        return {".lokr_w1_a": r(fa, 1), ".lokr_w1_b": r(1, fc), ".lokr_w2_a": r(out // fa, rank),
                ".lokr_w2_b": r(rank, in_ // fc * kk), ".alpha": a(rank * 2)}
    if kind == "lokr_full":  # both full: gamma 1, alpha ignored
        return {".lokr_w1": r(fa, fc), ".lokr_w2": r(out // fa, in_ // fc, *kernel), ".alpha": a(rank)}
    if kind == "lokr_tucker":
        return {".lokr_w1": r(fa, fc), ".lokr_w2_a": r(rank, out // fa), ".lokr_w2_b": r(rank, in_ // fc),
                ".lokr_t2": r(rank, rank, *kernel), ".alpha": a(rank)}
    if kind == "full":
        return {".diff": r(*shape), ".diff_b": r(out)}
    if kind == "norm":       # shape is a norm's (C,)
        return {".w_norm": r(out), ".b_norm": r(out)}
    if kind == "ia3":
        return {".weight": r(out), ".on_input": torch.tensor(0, dtype=torch.int64)}
    if kind == "glora":
        return {".a1.weight": r(in_, rank), ".a2.weight": r(rank, in_), ".b1.weight": r(out, rank),
                ".b2.weight": r(rank, in_), ".alpha": a(rank)}
    if kind == "oft":
        bs = 4
        return {".oft_blocks": r(out // bs, bs, bs), ".alpha": a(0)}
    if kind == "boft":
        bs = 4
        return {".oft_blocks": r(2, out // bs, bs, bs), ".alpha": a(0), ".rescale": (1 + r(out, 1)).to(dtype)}
    raise ValueError(kind)


# kind -> the report's adapter name (core.adapters.KIND_NAMES, spelled here independently)
ADAPTER_NAMES = {"lora": "LoRA", "locon": "LoCon", "tucker": "Tucker LoCon", "dora": "LoRA", "loha": "LoHa",
                 "loha_tucker": "Tucker LoHa", "lokr": "LoKr", "lokr_both": "LoKr", "lokr_full": "LoKr",
                 "lokr_tucker": "LoKr", "full": "full diff", "norm": "norm", "ia3": "(IA)^3", "glora": "GLoRA",
                 "oft": "OFT", "boft": "BOFT"}


def sdxl_adapter_zoo(seed: int = 0, dtype=torch.float16) -> Spec:
    """SDXL kohya/LyCORIS names, one adapter kind per group of layers (linear, 3x3 conv, 1x1 conv, norms)."""
    gen = torch.Generator().manual_seed(seed)
    L = layers("shapes_sdxl_unet")
    plan = [
        ("lora", "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
        ("lora", "diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_k"),
        ("locon", "diffusion_model.input_blocks.1.0.in_layers.2"),                     # 3x3
        ("locon", "diffusion_model.input_blocks.4.0.skip_connection"),                 # 1x1
        ("tucker", "diffusion_model.input_blocks.2.0.out_layers.3"),
        ("dora", "diffusion_model.input_blocks.5.1.proj_in"),
        ("loha", "diffusion_model.input_blocks.5.1.transformer_blocks.0.attn2.to_q"),
        ("loha", "diffusion_model.input_blocks.3.0.op"),                               # conv, flattened
        ("loha_tucker", "diffusion_model.middle_block.0.in_layers.2"),
        ("lokr", "diffusion_model.middle_block.1.transformer_blocks.0.ff.net.2"),
        ("lokr_both", "diffusion_model.middle_block.1.transformer_blocks.1.attn1.to_v"),
        ("lokr_full", "diffusion_model.middle_block.1.transformer_blocks.2.attn1.to_out.0"),
        ("lokr_tucker", "diffusion_model.output_blocks.2.2.conv"),
        ("full", "diffusion_model.output_blocks.8.0.emb_layers.1"),
        ("ia3", "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k"),
        ("glora", "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_v"),
        ("oft", "diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_q"),
        ("boft", "diffusion_model.output_blocks.4.1.transformer_blocks.1.attn1.to_q"),
        ("norm", "diffusion_model.output_blocks.4.1.norm"),                           # GroupNorm (C,)
    ]
    mods, sd = [], {}
    for kind, layer in plan:
        shape = L.get(layer) or (640,)
        t = adapter_tensors(kind, shape, 2, gen, dtype)
        name = kohya_unet(layer)
        keys = [name + s for s in t]
        sd.update(zip(keys, t.values()))
        mods.append(Mod(name, layer, tuple(shape), None, kind, keys, True))
    for name, layer, shape, _ in _te_names("kohya", "sdxl")[:4]:
        t = adapter_tensors("lora", shape, 2, gen, dtype)
        keys = [name + s for s in t]
        sd.update(zip(keys, t.values()))
        mods.append(Mod(name, layer, tuple(shape), None, "lora", keys, True))
    return Spec("kohya", "sdxl", mods, sd, {"ss_network_module": "lycoris.kohya"})
