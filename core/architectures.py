"""Architectures: which model a LoRA targets, which real layer each module patches, and the block layouts.

Data, not code: every architecture is a table read from ``core/data`` — the real layer names and shapes of
ComfyUI's own model classes (``shapes_*.json.gz``) and ComfyUI's own LoRA key maps (``lorakeys_*.json.gz``,
every module name ComfyUI accepts -> the model weight it patches, or a slice of a fused weight). A module
resolves when its name is in the map (directly, or through a few trainer spellings ComfyUI's map lacks) and
its shape fits the layer. Blocks and labels follow docs/blocks.md: INPnn/MIDnn/OUTnn, Dnn/Snn, Bnn.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("data")


@dataclass(frozen=True)
class Architecture:
    id: str
    title: str
    family: str                 # "unet", "double_single", "single_stack"
    shapes: str                 # data file stem of the model's layers
    keymap: str                 # data file stem of ComfyUI's LoRA key map
    clip: str | None = None     # data file stem of the CLIP key map (SD1.5/SDXL)
    block_pattern: str = ""     # regex on the model key: groups (section, number) or (number)
    hints: tuple[str, ...] = ()  # lower-case substrings of ss_base_model_version / modelspec.architecture


_UNET = r"^diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)\."
_DS = r"^diffusion_model\.(double_blocks|single_blocks)\.(\d+)\."

ARCHITECTURES: dict[str, Architecture] = {a.id: a for a in [
    Architecture("sd15", "SD1.5", "unet", "shapes_sd15_unet", "lorakeys_sd15_unet", "lorakeys_sd15_clip",
                 _UNET, ("sd_v1", "sd_1", "stable-diffusion-v1")),
    Architecture("sdxl", "SDXL", "unet", "shapes_sdxl_unet", "lorakeys_sdxl_unet", "lorakeys_sdxl_clip",
                 _UNET, ("sdxl", "stable-diffusion-xl")),
    Architecture("sd3_medium", "SD3 Medium", "single_stack", "shapes_sd3_medium", "lorakeys_sd3_medium", None,
                 r"^diffusion_model\.joint_blocks\.(\d+)\.", ("sd3", "stable-diffusion-3-medium")),
    Architecture("sd35_medium", "SD3.5 Medium", "single_stack", "shapes_sd35_medium", "lorakeys_sd35_medium", None,
                 r"^diffusion_model\.joint_blocks\.(\d+)\.", ("sd3.5-medium", "sd35_medium", "stable-diffusion-3.5-medium")),
    Architecture("sd35_large", "SD3.5 Large", "single_stack", "shapes_sd35_large", "lorakeys_sd35_large", None,
                 r"^diffusion_model\.joint_blocks\.(\d+)\.", ("sd3.5-large", "sd35_large", "stable-diffusion-3.5-large")),
    Architecture("flux", "Flux.1", "double_single", "shapes_flux_dev_transformer", "lorakeys_flux_dev_transformer",
                 None, _DS, ("flux",)),
    Architecture("chroma", "Chroma", "double_single", "shapes_chroma", "lorakeys_chroma", None, _DS, ("chroma",)),
    Architecture("hunyuan_video", "HunyuanVideo", "double_single", "shapes_hunyuan_video", "lorakeys_hunyuan_video",
                 None, _DS, ("hunyuan_video", "hunyuan-video", "hunyuanvideo")),
    Architecture("wan21_1_3b", "Wan 2.1 1.3B", "single_stack", "shapes_wan21_t2v_1_3b", "lorakeys_wan21_t2v_1_3b",
                 None, r"^diffusion_model\.blocks\.(\d+)\.", ("wan",)),
    Architecture("wan21_14b", "Wan 2.1/2.2 14B", "single_stack", "shapes_wan21_t2v_14b", "lorakeys_wan21_t2v_14b",
                 None, r"^diffusion_model\.blocks\.(\d+)\.", ("wan",)),
    Architecture("qwen_image", "Qwen-Image", "single_stack", "shapes_qwen_image", "lorakeys_qwen_image", None,
                 r"^diffusion_model\.transformer_blocks\.(\d+)\.", ("qwen_image", "qwen-image")),
    Architecture("z_image", "Z-Image", "single_stack", "shapes_z_image", "lorakeys_z_image", None,
                 r"^diffusion_model\.layers\.(\d+)\.", ("z_image", "z-image")),
    Architecture("lumina2", "Lumina 2", "single_stack", "shapes_lumina2", "lorakeys_lumina2", None,
                 r"^diffusion_model\.layers\.(\d+)\.", ("lumina",)),
]}

SECTION_PREFIX = {"input_blocks": "INP", "middle_block": "MID", "output_blocks": "OUT",
                  "double_blocks": "D", "single_blocks": "S"}
SECTION_ORDER = {"INP": 0, "MID": 1, "OUT": 2, "D": 0, "S": 1, "B": 0}

# Text encoders: module-name prefixes that always mean "text encoder", and which encoder where known.
TE_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "lora_te3_", "lora_te4_", "text_encoder.", "text_encoder_2.",
               "text_encoder_3.", "text_encoders.", "lora_prior_te_", "te1.", "te2.", "te.")


@lru_cache(maxsize=None)
def load_data(stem: str) -> dict:
    _parsed.add(stem)
    with gzip.open(DATA / f"{stem}.json.gz", "rt", encoding="utf-8") as f:
        return json.load(f)


_parsed: set[str] = set()


@lru_cache(maxsize=None)
def layer_shapes(stem: str) -> dict[str, tuple[int, ...]]:
    """Model layer name (``diffusion_model.x.y``, no ``.weight``) -> weight shape."""
    return {k: tuple(v["weight"]) for k, v in load_data(stem)["layers"].items()}


@lru_cache(maxsize=None)
def keymap(stem: str) -> dict[str, object]:
    return load_data(stem)


@lru_cache(maxsize=None)
def _underscore_index(stem: str) -> dict[str, str]:
    """``x_y_z`` -> ``diffusion_model.x.y.z`` for the model's layers (kohya-style flattened names)."""
    return {k[len("diffusion_model."):].replace(".", "_"): k for k in layer_shapes(stem)}


@dataclass(frozen=True)
class Target:
    """The model weight a module patches: ``key`` (``...weight``), optional fused slice, expected shape."""
    key: str
    slice: tuple[int, int, int] | None
    shape: tuple[int, ...] | None
    component: str              # "unet" (the diffusion model), "clip_l", "clip_g", "t5xxl", "te"


def _parse_target(value) -> tuple[str, tuple[int, int, int] | None]:
    if isinstance(value, str):
        return value, None
    key, sl = value[0], value[1]
    return key, (tuple(sl) if sl else None)


_PREFIX_SWAPS = [("lora_unet__", "lora_unet_"), ("lora_unet_", "lycoris_"), ("lycoris_", "lora_unet_"),
                 ("lora_transformer_", "lycoris_"), ("lora_unet_", "lora_transformer_"),
                 ("model.diffusion_model.", "diffusion_model."), ("transformer.", "diffusion_model."),
                 ("base_model.model.", "transformer."), ("unet.", "diffusion_model.")]
_ATTN = re.compile(r"^(.*\.attn[12])\.(to_q|to_k|to_v|to_out)(\.0)?$")


def _candidates(base: str):
    """The module name itself, then spellings ComfyUI's map lacks but trainers write."""
    yield base
    for a, b in _PREFIX_SWAPS:
        if base.startswith(a):
            yield b + base[len(a):]
    m = _ATTN.match(base)
    if m:
        for c in (f"{m.group(1)}.processor.{m.group(2)}", f"unet.{m.group(1)}.processor.{m.group(2)}"):
            yield c
    if not base.startswith(("diffusion_model.", "lora_", "lycoris_", "transformer.", "unet.")):
        yield "diffusion_model." + base  # bare names (DiffSynth, Qwen)


def may_resolve(arch: Architecture, bases: list[str]) -> bool:
    """False only when ``resolve_unet(arch, b)`` is None for every ``b`` of ``bases``, found without parsing
    the architecture's maps while they are not loaded yet: a name that resolves has one of ``keymap_stems``
    (shipped precomputed, so a model no name can match costs a set lookup per spelling). Once the maps are
    loaded it answers True: resolving the names is then the cheaper test, and the caller's."""
    if arch.keymap in _parsed:
        return True
    stems = _shipped_stems(arch.id)
    return any(_stem(cand) in stems for b in bases for cand in _candidates(b))


def _stem(name: str) -> str:
    return _DIGIT.split(name, 1)[0]


_DIGIT = re.compile(r"\d")


def keymap_stems(arch: Architecture) -> list[str]:
    """The stems (the part before the first digit) of every name that can resolve in ``arch``: its key map's
    names and the kohya-style flattened layer names. ``data/keymap_stems.json.gz`` holds them for every
    architecture (written by ``scripts/build_keymap_stems.py``; a test checks it against the maps)."""
    stems = {_stem(k) for k in keymap(arch.keymap)}
    stems |= {p + _stem(u) for u in _underscore_index(arch.shapes) for p in _FLAT_PREFIXES}
    return sorted(stems)


@lru_cache(maxsize=None)
def _shipped_stems(arch_id: str) -> frozenset[str]:
    return frozenset(load_data("keymap_stems")[arch_id])


_FLAT_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")


def resolve_unet(arch: Architecture, base: str) -> Target | None:
    """Resolve a diffusion-model module name of ``arch`` to its target, or None."""
    km = keymap(arch.keymap)
    shapes = layer_shapes(arch.shapes)
    for cand in _candidates(base):
        value = km.get(cand)
        if value is None:
            for prefix in _FLAT_PREFIXES:
                if cand.startswith(prefix):
                    dotted = _underscore_index(arch.shapes).get(cand[len(prefix):])
                    if dotted is not None:
                        return Target(dotted + ".weight", None, shapes[dotted], "unet")
            continue
        key, sl = _parse_target(value)
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        if layer is None or layer not in shapes:
            if key in _state_dict_keys(arch.keymap):
                # a real weight that is no Linear/Conv (norm weights, Flux QK-norm scales, Wan modulation,
                # biases): w_norm/b_norm/diff/diff_b patches; no shape to check
                return Target(key, sl, None, "unet")
            continue  # generic map entries whose target the model lacks
        return Target(key, sl, shapes[layer], "unet")
    return None


@lru_cache(maxsize=None)
def _state_dict_keys(stem: str) -> frozenset[str]:
    """The model's real state-dict keys: ComfyUI builds its generic ``diffusion_model.<key>`` names from the
    state dict itself, so their targets exist (unlike some diffusers aliases, e.g. SD1.5 ``input_blocks.12``)."""
    out = set()
    for name, value in keymap(stem).items():
        if isinstance(value, str) and name.startswith("diffusion_model.") and value in (name, name + ".weight"):
            out.add(value)
    return frozenset(out)


@lru_cache(maxsize=None)
def _t5_index() -> dict[str, str]:
    return {k[len("transformer."):].replace(".", "_"): k for k in layer_shapes("shapes_t5xxl")}


def is_text_encoder_name(base: str) -> bool:
    return base.startswith(TE_PREFIXES)


def resolve_text_encoder(arch: Architecture | None, base: str) -> Target | None:
    """Resolve a text-encoder module (CLIP-L/G through ComfyUI's CLIP maps, T5 by its layer names)."""
    stems = [arch.clip] if arch is not None and arch.clip else ["lorakeys_sdxl_clip"]
    for stem in stems:
        value = keymap(stem).get(base)
        if value is not None:
            key, sl = _parse_target(value)
            enc = key.split(".", 1)[0]
            layer = key.split(".", 1)[1][: -len(".weight")] if key.endswith(".weight") else None
            shapes = layer_shapes("shapes_clip_l" if enc == "clip_l" else "shapes_clip_g")
            return Target(key, sl, shapes.get(layer) if layer else None, enc)
    m = re.match(r"^lora_te\d?_(.*)$", base)
    rest = m.group(1) if m else None
    if base.startswith("text_encoders.t5xxl.transformer."):
        rest = base[len("text_encoders.t5xxl.transformer."):].replace(".", "_")
    if rest is not None and rest in _t5_index():
        layer = _t5_index()[rest]
        return Target(f"t5xxl.{layer}.weight", None, layer_shapes("shapes_t5xxl")[layer], "t5xxl")
    return None


def block_of(arch: Architecture, target_key: str) -> str | None:
    """The block label of a model key (``INP04``, ``D07``, ``B12``), or None outside numbered blocks."""
    m = re.match(arch.block_pattern, target_key)
    if not m:
        return None
    if m.lastindex == 2:
        return f"{SECTION_PREFIX[m.group(1)]}{int(m.group(2)):02d}"
    return f"B{int(m.group(1)):02d}"


def label_sort_key(label: str) -> tuple[int, int]:
    m = re.match(r"^([A-Z]+)(\d+)$", label)
    return SECTION_ORDER.get(m.group(1), 9), int(m.group(2))


def sort_labels(labels) -> list[str]:
    return sorted(set(labels), key=label_sort_key)


@lru_cache(maxsize=None)
def full_layout(arch_id: str) -> tuple[str, ...]:
    """Every block label of the architecture, in model order; conv_in (INP00) is not part of it."""
    arch = ARCHITECTURES[arch_id]
    labels = {block_of(arch, k + ".weight") for k in layer_shapes(arch.shapes)}
    labels.discard(None)
    labels.discard("INP00")
    return tuple(sort_labels(labels))


def block_name(arch: Architecture, label: str) -> str:
    """``INP04`` -> ``input_blocks.4``, ``D07`` -> ``double_blocks.7``, ``B12`` -> ``blocks.12`` etc."""
    m = re.match(r"^([A-Z]+)(\d+)$", label)
    sec, n = m.group(1), int(m.group(2))
    inv = {v: k for k, v in SECTION_PREFIX.items()}
    if sec in inv:
        return f"{inv[sec]}.{n}"
    container = re.match(r"^\^diffusion_model\\\.(\w+)", arch.block_pattern).group(1)
    return f"{container}.{n}"


def hint_strength(arch: Architecture, metadata: dict[str, str] | None) -> int:
    """How specifically the training metadata names ``arch``: the length of its longest hint found in
    ``ss_base_model_version`` / ``modelspec.architecture`` (0: none). The longest match decides, so
    "stable-diffusion-3.5-medium" favours SD3.5 Medium over SD3 Medium's shorter hint "sd3"."""
    if not metadata:
        return 0
    text = " ".join(metadata.get(k, "") for k in ("ss_base_model_version", "modelspec.architecture")).lower()
    return max((len(h) for h in arch.hints if h in text), default=0)


def hinted(arch: Architecture, metadata: dict[str, str] | None) -> bool:
    return hint_strength(arch, metadata) > 0
