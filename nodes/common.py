"""Shared pieces of the nodes: the CHOPSHOP_LORA type, the LoRA file list and safe path resolution, the
progress bar with Cancel, and images (PIL <-> IMAGE, temp previews).

Everything that touches ComfyUI (folder_paths, comfy.*) is imported inside functions, so importing this
module does no work; only ``comfy_api`` is imported at module level (it is what declares the schema).
"""
from __future__ import annotations

import dataclasses
import os

from comfy_api.v0_0_2 import io

from ..core.errors import ChopShopError
from ..core.lora_file import LoraFile, from_tensors

CATEGORY = "loaders/LoRA Chop Shop"
LORA_TYPE_NAME = "CHOPSHOP_LORA"
ChopShopLora = io.Custom(LORA_TYPE_NAME)

LORA_IN_TOOLTIP = ("A LoRA held in memory by LoRA Chop Shop (from Load LoRA File, Block Chop, SVD Resize or "
                   "From LORA_MODEL). Never modified in place: every operation returns a new one.")
LORA_OUT_TOOLTIP = "The LoRA in memory (tensors + metadata); connect it to Apply LoRA, Save LoRA or another Chop Shop node."


def lora_input(optional: bool = False, tooltip: str = LORA_IN_TOOLTIP):
    return ChopShopLora.Input("lora", tooltip=tooltip, optional=optional)


def lora_output(tooltip: str = LORA_OUT_TOOLTIP):
    return ChopShopLora.Output("LORA", display_name="LORA", tooltip=tooltip)


def lora_names() -> list[str]:
    """The .safetensors files of every configured loras folder (extra model paths included), as the
    stock LoRA loaders list them. Read on every call (define_schema runs at each /object_info)."""
    import folder_paths
    return [n for n in folder_paths.get_filename_list("loras") if n.lower().endswith(".safetensors")]


def lora_roots() -> list[str]:
    import folder_paths
    return [os.path.abspath(p) for p in folder_paths.get_folder_paths("loras")]


class LoraNotFound(ChopShopError):
    """The name is well-formed but no loras folder holds such a file (routes answer 404)."""


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), root]) == root
    except ValueError:       # different drives
        return False


def inside_roots(path: str, roots: list[str]) -> bool:
    """True when ``path`` lies inside one of ``roots`` both as written and with every symbolic link
    resolved (a link inside a loras folder that leads elsewhere is outside)."""
    real = os.path.realpath(path)
    return any(_inside(path, root) and _inside(real, os.path.realpath(root)) for root in roots)


def resolve_lora(name: str) -> str:
    """Full path of a name from the loras list; refuses anything that is not a .safetensors file inside a
    loras folder (no free-form paths, no traversal, no pickles)."""
    import folder_paths
    if not isinstance(name, str) or not name.strip():
        raise ChopShopError("no LoRA file selected")
    if not name.lower().endswith(".safetensors"):
        raise ChopShopError(f"{name}: only .safetensors LoRA files are read (pickled .ckpt/.pt files are refused)")
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        raise LoraNotFound(f"{name}: give a name from the loras list, not a path")
    try:
        path = folder_paths.get_full_path_or_raise("loras", name)
    except FileNotFoundError:
        raise LoraNotFound(f"{name}: not found in the loras folders") from None
    if not inside_roots(path, lora_roots()):
        raise ChopShopError(f"{name}: leads outside the loras folders (through a symbolic link: "
                            f"{os.path.realpath(path)}); refused. To use files stored elsewhere, add their "
                            "folder to the loras paths in extra_model_paths.yaml")
    return path


def file_fingerprint(name: str) -> str:
    try:
        path = resolve_lora(name)
        st = os.stat(path)
    except (ChopShopError, OSError):
        return f"missing:{name}"
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"


def as_lora(value, what: str = "lora") -> LoraFile:
    """A LoraFile from a CHOPSHOP_LORA value, or from ComfyUI's LORA_MODEL (a plain tensor dict)."""
    if isinstance(value, LoraFile):
        return value
    if isinstance(value, dict):
        return from_tensors(value, {}, name="lora_model")
    if value is None:
        raise ChopShopError(f"{what}: nothing connected")
    raise ChopShopError(f"{what}: expected a LoRA, got {type(value).__name__}")


def in_memory(lora: LoraFile) -> LoraFile:
    """The same LoraFile with every tensor in memory (ComfyUI keeps values after the file may change)."""
    with lora:
        return dataclasses.replace(lora, store=lora.store.materialize())


def state_dict(lora: LoraFile) -> dict:
    """A new plain dict of the LoRA's tensors (what comfy.sd.load_lora_for_models takes)."""
    return {k: lora.store.tensor(k) for k in lora.store.keys()}


def progress_bar():
    """(progress callback, cancel check) for core functions and renders: a ComfyUI ProgressBar created on the
    first call and again when the total changes (updating it also lets the Cancel button interrupt), plus the
    interrupt check. ``progress(done, total, preview=None)``; ``preview`` is what a sampler step shows (the
    bytes latent_preview makes)."""
    import comfy.model_management
    import comfy.utils
    state = {}

    def progress(done: int, total: int, preview=None) -> None:
        bar = state.get("bar")
        if bar is None or state.get("total") != total:
            bar = state["bar"] = comfy.utils.ProgressBar(total)
            state["total"] = total
        bar.update_absolute(done, total, preview)

    return progress, comfy.model_management.throw_exception_if_processing_interrupted


def image_tensor(img) -> "torch.Tensor":
    """A PIL image as a ComfyUI IMAGE: float32 (1, H, W, 3) in [0, 1]."""
    import numpy as np
    import torch
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]


def pil_image(image: "torch.Tensor"):
    """One (H, W, C) image of a ComfyUI IMAGE as an 8-bit PIL image (values rounded)."""
    import torch
    from PIL import Image
    return Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())


def preview_images(cls, *images: "torch.Tensor") -> list[dict]:
    """The UI entries of ComfyUI's temp previews of ``images`` (IMAGE tensors), as PreviewImage shows them."""
    from comfy_api.v0_0_2 import ui
    return [entry for img in images for entry in ui.PreviewImage(img, cls=cls).as_dict()["images"]]
