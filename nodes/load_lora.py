"""Load LoRA File (Chop Shop): a .safetensors LoRA from the loras folders, held in memory."""
from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..core.lora_file import read
from .common import CATEGORY, file_fingerprint, in_memory, lora_names, lora_output, resolve_lora


class ChopShopLoadLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopLoadLoRA",
            display_name="Load LoRA File (Chop Shop)",
            category=CATEGORY,
            description="Reads a LoRA/LyCORIS .safetensors file from the loras folders (extra model paths "
                        "included) into memory for inspection, chopping, resizing, applying and saving. "
                        "Only .safetensors files are offered; nothing outside the loras folders is read.",
            inputs=[
                io.Combo.Input("lora_name", options=lora_names(),
                               tooltip="A .safetensors file from models/loras (and extra model paths), as the "
                                       "stock LoRA loaders list it."),
            ],
            outputs=[lora_output("The LoRA read from the file (every tensor in memory, metadata kept).")],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name):
        return file_fingerprint(lora_name)

    @classmethod
    def execute(cls, lora_name) -> io.NodeOutput:
        return io.NodeOutput(in_memory(read(resolve_lora(lora_name))))
