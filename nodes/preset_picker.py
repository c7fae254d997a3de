"""Preset Picker (Chop Shop): a named block preset as a vector string for Block Chop."""
from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..core.errors import ChopShopError
from ..core.presets import check_architecture, find_preset, load_presets, preset_vector
from ..core.vector import format_vector
from .common import CATEGORY, as_lora, lora_input

UNREADABLE = "(presets unreadable)"


def preset_names() -> list[str]:
    try:
        return list(load_presets())
    except ChopShopError:
        return [UNREADABLE]


def vector_for(preset_name: str, lora=None) -> str:
    p = find_preset(preset_name)
    if lora is None:
        values, _ = preset_vector(p)
        return format_vector(values[0], values[1:])
    lf = as_lora(lora)
    check_architecture(p, lf.architecture)
    present = lf.blocks()
    if not present:
        raise ChopShopError(f"no blocks found in this LoRA (architecture: {lf.architecture}); nothing to chop")
    return format_vector(p.global_weight, [p.weights.get(lab, 1.0) for lab in present])


class ChopShopPresetPicker(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopPresetPicker",
            display_name="Preset Picker (Chop Shop)",
            category=CATEGORY,
            description="Picks a named block preset (shipped presets.json plus your user_presets.json, "
                        "re-read on every refresh) and turns it into a Block Chop vector. Presets are stored "
                        "by block label, so a preset written for the full SDXL layout also fits a LoRA that "
                        "trains fewer blocks.",
            inputs=[
                io.Combo.Input("preset", options=preset_names(),
                               tooltip="A shipped or user preset (user_presets.json beside presets.json; a user "
                                       "preset with a shipped name wins)."),
                lora_input(optional=True,
                           tooltip="Optional: the LoRA the preset is for. Checks the preset's architecture and "
                                   "outputs the vector over this LoRA's own blocks (positional form)."),
            ],
            outputs=[
                io.String.Output("vector", display_name="vector",
                                 tooltip="Comma-separated weights, global first: over the connected LoRA's blocks "
                                         "when one is connected, else over the preset's full layout (e.g. 21 "
                                         "numbers for SDXL)."),
                io.String.Output("preset_name", display_name="preset_name",
                                 tooltip="The preset's name; connect it to Block Chop so the chop records it."),
            ],
        )

    @classmethod
    def execute(cls, preset, lora=None) -> io.NodeOutput:
        if preset == UNREADABLE:
            load_presets()   # raises the reason
        p = find_preset(preset)
        return io.NodeOutput(vector_for(p.name, lora), p.name)
