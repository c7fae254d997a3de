"""Block Chop (Chop Shop): keep, drop or scale a LoRA's blocks with a vector."""
from __future__ import annotations

import json

from comfy_api.v0_0_2 import io

from ..core.chop import apply, plan
from ..core.errors import ChopShopError
from .common import CATEGORY, as_lora, lora_input, lora_output

VECTOR_TOOLTIP = ("Block weights, comma-separated, global multiplier first: '1,w1,...,wN'. N = the blocks "
                  "present in this LoRA (positional, model order; see the Block Layout Inspector's vector "
                  "template) or the architecture's full layout (applied by block label, e.g. 21 numbers for "
                  "SDXL). 0 removes a block, 1 keeps it unchanged, other values scale its delta linearly. "
                  "Wrong lengths are errors (no padding as in Inspire).")


def summary_text(s: dict) -> str:
    lines = [f"Mode: {s['mode']}  vector: {s['vector']}" + (f"  preset: {s['preset']}" if s.get("preset") else ""),
             f"Kept: {', '.join(s['kept_blocks']) or '-'}",
             f"Removed: {', '.join(s['removed_blocks']) or '-'}"]
    if s["scaled_blocks"]:
        lines.append("Scaled: " + ", ".join(f"{k} x{v:g}" for k, v in s["scaled_blocks"].items()))
    lines.append(f"Text encoder weight: {s['te_weight']:g}")
    lines.append(f"Tensors: {s['tensors_in']} -> {s['tensors_out']}, "
                 f"{s['bytes_in'] / 2 ** 20:.2f} MiB -> {s['bytes_out'] / 2 ** 20:.2f} MiB")
    for w in s["warnings"][:20]:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


class ChopShopBlockChop(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopBlockChop",
            display_name="Block Chop (Chop Shop)",
            category=CATEGORY,
            description="Keeps, drops or scales whole blocks of a LoRA with a weight vector. Dropped blocks' "
                        "tensors are removed; kept ones stay byte-identical; text-encoder and non-block keys "
                        "pass through unless te_weight says otherwise.",
            inputs=[
                lora_input(tooltip="The LoRA to chop."),
                io.String.Input("vector", default="", multiline=False, tooltip=VECTOR_TOOLTIP),
                io.Float.Input("te_weight", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Weight of the text-encoder modules (1 = unchanged, 0 = removed). The "
                                       "vector's global number never touches them."),
                io.String.Input("preset_name", default="", optional=True, force_input=True,
                                tooltip="Optional: the preset name from Preset Picker, recorded in the chopped "
                                        "LoRA's provenance metadata."),
            ],
            outputs=[
                lora_output("The chopped LoRA (a new one; the input is untouched)."),
                io.String.Output("summary", display_name="summary",
                                 tooltip="Kept, removed and scaled blocks, tensor counts and sizes."),
            ],
        )

    @classmethod
    def execute(cls, lora, vector, te_weight, preset_name=None) -> io.NodeOutput:
        lf = as_lora(lora)
        if vector is None or not str(vector).strip():
            raise ChopShopError("empty block vector: give comma-separated weights such as 1,0,1,1 (the Block "
                                "Layout Inspector prints this LoRA's template), or connect Preset Picker")
        p = plan(lf, vector=vector, te_weight=float(te_weight))
        if preset_name and str(preset_name).strip():
            p.preset = str(preset_name).strip()
        out, summary = apply(lf, p)
        text = summary_text(summary)
        return io.NodeOutput(out, text, ui={"text": [text], "chopshop_chop": [json.loads(json.dumps(summary))]})
