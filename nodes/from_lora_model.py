"""From LORA_MODEL (Chop Shop): ComfyUI's own in-memory LoRA type (e.g. from Train LoRA) as a Chop Shop LoRA."""
from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..core.errors import ChopShopError
from ..core.lora_file import from_tensors
from .common import CATEGORY, lora_output


class ChopShopFromLoraModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopFromLoraModel",
            display_name="From LORA_MODEL (Chop Shop)",
            category=CATEGORY,
            description="Wraps ComfyUI's LORA_MODEL (a plain tensor dict, e.g. from Train LoRA or Load LoRA "
                        "Model) so the Chop Shop nodes can inspect, chop, resize and save it. The dict is not "
                        "modified.",
            inputs=[io.LoraModel.Input("lora_model", tooltip="ComfyUI's LORA_MODEL: a LoRA state dict in any "
                                                              "naming ComfyUI's LoRA loading accepts.")],
            outputs=[lora_output("The same tensors as a Chop Shop LoRA (no metadata: LORA_MODEL has none).")],
        )

    @classmethod
    def execute(cls, lora_model) -> io.NodeOutput:
        if not isinstance(lora_model, dict):
            raise ChopShopError(f"expected a LORA_MODEL tensor dict, got {type(lora_model).__name__}")
        return io.NodeOutput(from_tensors(dict(lora_model), {}, name="lora_model"))
