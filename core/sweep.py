"""Block Impact Sweep, planning: which renders a sweep makes (variants), grouping, and the checks done before
any render.

A sweep renders the model without the LoRA (``base``), with the whole LoRA (``full``), then one image per
variant, all with the same seed and settings. A variant is a set of block weights over the blocks present in
the LoRA, plus the weight of the LoRA's non-block diffusion-model modules (``time_embed``, ``img_in`` ...):

* ``solo``: one block on, everything else off (non-block modules off too): "no LoRA + only block i".
* ``knock-out``: the whole LoRA minus one block (non-block modules on): "full LoRA - block i".
* ``groups``: one group on, everything else off. UNets (SD1.5, SDXL): IN / MID / OUT. DiTs: runs of
  ``group_size`` consecutive blocks, never across a section (Flux D00-D03 ... S36-S37).
* ``presets``: each shipped or user preset of the LoRA's architecture, exactly as Block Chop would apply it
  (non-block modules kept, blocks the preset does not name at the preset's global weight).

Pure: no ComfyUI import. ``model_architectures`` maps the names ComfyUI gives its model classes to ids.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .architectures import ARCHITECTURES, sort_labels
from .errors import ChopShopError
from .presets import Preset, load_presets
from .vector import weights_from_labels

MODES = ("solo", "knock-out", "groups", "presets")
MAX_RENDERS = 200
UNET_GROUPS = (("IN", "INP"), ("MID", "MID"), ("OUT", "OUT"))


@dataclass(frozen=True)
class Variant:
    """One render: ``weights`` per block present (0 = off), ``others`` for the non-block modules.
    ``blocks`` are the blocks the variant is about (what its impact is credited to)."""
    name: str
    kind: str                        # "base", "full", "solo", "knock-out", "group", "preset"
    weights: dict[str, float]
    others: float
    blocks: tuple[str, ...] = ()

    def kept(self) -> list[str]:
        return [lab for lab, w in self.weights.items() if w != 0]


@dataclass
class SweepPlan:
    mode: str
    architecture: str
    present: list[str]               # block labels in the LoRA, model order
    variants: list[Variant]
    group_size: int = 1
    warnings: list[str] = field(default_factory=list)

    @property
    def base(self) -> Variant:
        return Variant("no LoRA", "base", {lab: 0.0 for lab in self.present}, 0.0)

    @property
    def full(self) -> Variant:
        return Variant("full LoRA", "full", {lab: 1.0 for lab in self.present}, 1.0, tuple(self.present))

    def renders(self) -> list[Variant]:
        """Every render in order: no LoRA, full LoRA, then the variants."""
        return [self.base, self.full, *self.variants]


def section(label: str) -> str:
    """``OUT04`` -> ``OUT``, ``D07`` -> ``D``, ``B12`` -> ``B``."""
    return re.match(r"^[A-Z]+", label).group(0)


def is_unet(architecture: str) -> bool:
    a = ARCHITECTURES.get(architecture)
    return a is not None and a.family == "unet"


def runs(present: list[str], group_size: int) -> list[tuple[str, list[str]]]:
    """Runs of ``group_size`` consecutive present blocks within each section: [("D00-D03", [...]), ...]."""
    out: list[tuple[str, list[str]]] = []
    by_section: dict[str, list[str]] = {}
    for lab in sort_labels(present):
        by_section.setdefault(section(lab), []).append(lab)
    for labels in by_section.values():
        for i in range(0, len(labels), group_size):
            run = labels[i:i + group_size]
            out.append((run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}", run))
    return out


def block_groups(architecture: str, present: list[str], group_size: int) -> list[tuple[str, list[str]]]:
    """IN / MID / OUT for UNets (only the groups present); runs of ``group_size`` for DiTs."""
    if is_unet(architecture):
        out = []
        for name, prefix in UNET_GROUPS:
            labels = [lab for lab in sort_labels(present) if section(lab) == prefix]
            if labels:
                out.append((name, labels))
        return out
    return runs(present, group_size)


def check_inputs(mode: str, group_size: int, present: list[str], architecture: str) -> None:
    if mode not in MODES:
        raise ChopShopError(f"unknown sweep mode {mode!r}; valid: {', '.join(MODES)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ChopShopError(f"group_size must be a whole number >= 1, got {group_size!r}")
    if not present:
        raise ChopShopError(f"this LoRA has no block modules (architecture: {architecture}): nothing to sweep. "
                            "Its modules are all text-encoder or non-block layers.")


def solo_variants(present: list[str]) -> list[Variant]:
    return [Variant(lab, "solo", {b: float(b == lab) for b in present}, 0.0, (lab,)) for lab in present]


def knockout_variants(present: list[str]) -> list[Variant]:
    return [Variant(f"-{lab}", "knock-out", {b: float(b != lab) for b in present}, 1.0, (lab,)) for lab in present]


def group_variants(architecture: str, present: list[str], group_size: int) -> list[Variant]:
    return [Variant(name, "group", {b: float(b in labels) for b in present}, 0.0, tuple(labels))
            for name, labels in block_groups(architecture, present, group_size)]


def preset_variants(architecture: str, present: list[str], presets: dict[str, Preset]) -> list[Variant]:
    out = []
    for p in presets.values():
        if p.layout != architecture:
            continue
        w = weights_from_labels(p.weights, p.global_weight, present, p.name).weights
        out.append(Variant(p.name, "preset", dict(w), 1.0, tuple(lab for lab in present if w[lab] != 0)))
    return out


def too_many(mode: str, count: int, present: list[str], architecture: str) -> str:
    need = next((g for g in range(1, len(present) + 1) if len(runs(present, g)) + 2 <= MAX_RENDERS), len(present))
    if mode == "groups":
        hint = (f"set a larger group_size (at least {need})" if not is_unet(architecture)
                else "sweep fewer blocks")
    elif mode == "presets":
        hint = "keep fewer presets for this architecture"
    else:
        hint = f"use mode 'groups' with a group_size of at least {need}"
    return f"this {mode} sweep needs {count} renders (more than {MAX_RENDERS}); {hint}"


def plan_sweep(architecture: str, present: list[str], mode: str, group_size: int = 4,
               presets: dict[str, Preset] | None = None) -> SweepPlan:
    """The renders of a sweep; raises ChopShopError on bad input (before anything is rendered)."""
    check_inputs(mode, group_size, present, architecture)
    present = sort_labels(present)
    if mode == "solo":
        variants = solo_variants(present)
    elif mode == "knock-out":
        variants = knockout_variants(present)
    elif mode == "groups":
        variants = group_variants(architecture, present, group_size)
    else:
        presets = load_presets() if presets is None else presets
        variants = preset_variants(architecture, present, presets)
        if not variants:
            title = ARCHITECTURES[architecture].title if architecture in ARCHITECTURES else architecture
            raise ChopShopError(f"no preset is made for {title} ({architecture}) blocks; use mode solo, "
                                "knock-out or groups, or add a preset for this layout to user_presets.json")
    count = 2 + len(variants)
    if count > MAX_RENDERS:
        raise ChopShopError(too_many(mode, count, present, architecture))
    return SweepPlan(mode, architecture, present, variants, group_size)


# ComfyUI model-config class names -> the architecture ids they can be (first match along the class's MRO).
MODEL_CLASSES = {
    "SD15": ("sd15",), "SDXL": ("sdxl",), "Flux2": (), "Flux": ("flux",), "Chroma": ("chroma",),
    "HunyuanVideo": ("hunyuan_video",), "HunyuanVideoI2V": ("hunyuan_video",),
    "HunyuanVideoSkyreelsI2V": ("hunyuan_video",), "HunyuanImage21": (), "HunyuanVideo15": (),
    "QwenImage": ("qwen_image",), "ZImage": ("z_image",), "Lumina2": ("lumina2",),
    "WAN21_T2V": ("wan21_1_3b", "wan21_14b"), "SD3": ("sd3_medium", "sd35_medium", "sd35_large"),
}


def model_architectures(class_names: list[str], unet_config: dict | None = None) -> tuple[str, ...] | None:
    """The architecture ids a ComfyUI model can be, from its model-config class and its MRO names (most
    specific first); None when the model is of a kind the pack has no layout for."""
    cfg = unet_config or {}
    for name in class_names:
        if name not in MODEL_CLASSES:
            continue
        ids = MODEL_CLASSES[name]
        if not ids:
            return None
        if name == "WAN21_T2V" and cfg.get("dim") in (1536, 5120):
            return ("wan21_1_3b",) if cfg["dim"] == 1536 else ("wan21_14b",)
        if name == "SD3" and cfg.get("depth") in (24, 38):
            return ("sd35_large",) if cfg["depth"] == 38 else ("sd3_medium", "sd35_medium")
        return ids
    return None


def check_model(lora_architecture: str, model_ids: tuple[str, ...] | None, model_name: str) -> None:
    """One clear error when the LoRA is for another architecture than the model (both named)."""
    if model_ids is None or lora_architecture in model_ids:
        return
    a = ARCHITECTURES.get(lora_architecture)
    lora = f"{a.title} ({lora_architecture})" if a else f"of an unknown architecture ({lora_architecture})"
    model = " or ".join(f"{ARCHITECTURES[i].title} ({i})" for i in model_ids)
    raise ChopShopError(f"the LoRA is {lora} but the model is {model} [{model_name}]; connect a model of the "
                        "LoRA's architecture or a LoRA trained for this model")
