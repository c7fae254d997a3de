"""Save LoRA (Chop Shop): write an in-memory LoRA as a normal .safetensors LoRA under models/loras/chopshop/."""
from __future__ import annotations

import os
import re

from comfy_api.v0_0_2 import io, ui

from ..core.errors import ChopShopError, OutputExists
from ..core.save import save
from ..core.module_checks import refuse_broken
from .common import CATEGORY, as_lora, inside_roots, lora_input, lora_roots

SUBFOLDER = "chopshop"
_BAD_CHARS = re.compile(r'[\x00-\x1f<>:"|?*\\]')


def split_prefix(prefix: str) -> tuple[list[str], str]:
    """(subfolders, file stem) of a filename prefix; refuses absolute paths, '..', empty parts, odd characters."""
    p = (prefix or "").strip()
    if p.lower().endswith(".safetensors"):
        p = p[: -len(".safetensors")]
    if not p:
        raise ChopShopError("filename_prefix is empty: give a name such as 'chopped' or 'mychar/chopped'")
    if p.startswith(("/", "\\")) or os.path.isabs(p) or re.match(r"^[A-Za-z]:", p):
        raise ChopShopError(f"filename_prefix {prefix!r} is an absolute path; give a name relative to "
                            f"models/loras/{SUBFOLDER}/ (subfolders such as 'mychar/chopped' are fine)")
    parts = p.split("/")
    if any(part in ("..", ".") for part in parts):
        raise ChopShopError(f"filename_prefix {prefix!r} contains '..' or '.'; files are only written inside "
                            f"models/loras/{SUBFOLDER}/")
    if any(part.strip() == "" for part in parts) or _BAD_CHARS.search(p):
        raise ChopShopError(f"filename_prefix {prefix!r} has an empty folder name or a character not allowed in "
                            "file names (\\ : * ? \" < > | or control characters)")
    return parts[:-1], parts[-1]


def next_counter(folder: str, stem: str) -> int:
    """1 + the largest N among '<stem>_<N>.safetensors' / '<stem>_<N>_…' in folder (as ComfyUI's
    get_save_image_path counts), 1 if none."""
    pat = re.compile(re.escape(stem) + r"_(\d+)(?:[_.].*)?$", re.IGNORECASE if os.name == "nt" else 0)
    best = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for n in names:
        m = pat.match(n)
        if m:
            best = max(best, int(m.group(1)))
    return best + 1


def check_output_folder(folder: str, roots: list[str], prefix: str) -> None:
    """Refuse a folder that, with symbolic links resolved, lies outside every loras folder (a symlinked
    subfolder leading elsewhere), or that exists but is no directory."""
    if not inside_roots(folder, roots):
        raise ChopShopError(f"filename_prefix {prefix!r}: models/loras/{SUBFOLDER}/ or a subfolder is a symbolic "
                            f"link leading outside the loras folders ({os.path.realpath(folder)}); refused")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ChopShopError(f"filename_prefix {prefix!r}: {folder} exists and is not a folder")


def save_lora(lora, filename_prefix: str) -> tuple[str, str]:
    """Write the LoRA; returns (relative name as the loras list shows it, full path)."""
    roots = lora_roots()
    if not roots:
        raise ChopShopError("no loras folder is configured")
    root = roots[0]
    subdirs, stem = split_prefix(filename_prefix)
    base = os.path.join(root, SUBFOLDER)
    folder = os.path.abspath(os.path.join(base, *subdirs))
    if os.path.commonpath([folder, os.path.abspath(base)]) != os.path.abspath(base):
        raise ChopShopError(f"filename_prefix {filename_prefix!r} escapes models/loras/{SUBFOLDER}/; refused")
    check_output_folder(folder, roots, filename_prefix)
    refuse_broken(lora)
    os.makedirs(folder, exist_ok=True)
    check_output_folder(folder, roots, filename_prefix)   # nothing was swapped in meanwhile
    counter = next_counter(folder, stem)
    for _ in range(1000):
        path = os.path.join(folder, f"{stem}_{counter:05}.safetensors")
        if not os.path.exists(path):
            try:
                save(lora, path)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                return rel, path
            except OutputExists:
                pass  # taken between the check and the write: try the next number
        counter += 1
    raise ChopShopError(f"could not find a free file name for {stem} in {folder}")


class ChopShopSaveLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopSaveLoRA",
            display_name="Save LoRA (Chop Shop)",
            category=CATEGORY,
            description="Saves the LoRA as a normal .safetensors file in models/loras/chopshop/ "
                        "(<prefix>_00001.safetensors, counting up, never overwriting), with its metadata, "
                        "recomputed sshs hashes and the Chop Shop provenance. The file appears in every LoRA "
                        "loader's list at once.",
            inputs=[
                lora_input(tooltip="The LoRA to save."),
                io.String.Input("filename_prefix", default="chopped",
                                tooltip="File name prefix inside models/loras/chopshop/; '/' makes subfolders "
                                        "(e.g. 'mychar/chopped'). A counter is appended. Absolute paths and '..' "
                                        "are refused."),
            ],
            outputs=[
                io.String.Output("path", display_name="path",
                                 tooltip="The saved file's name as the LoRA loaders list it, e.g. "
                                         "chopshop/chopped_00001.safetensors."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora, filename_prefix) -> io.NodeOutput:
        rel, _ = save_lora(as_lora(lora), filename_prefix)
        return io.NodeOutput(rel, ui=ui.PreviewText(rel))
