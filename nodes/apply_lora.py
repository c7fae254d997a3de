"""Apply LoRA (Chop Shop): patch a MODEL (and CLIP) with an in-memory LoRA, as LoraLoader does with a file."""
from __future__ import annotations

from comfy_api.v0_0_2 import io

from .common import CATEGORY, as_lora, lora_input, state_dict


class ChopShopApplyLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopApplyLoRA",
            display_name="Apply LoRA (Chop Shop)",
            category=CATEGORY,
            description="Applies an in-memory LoRA (chopped, resized or loaded) to a model and text encoder "
                        "through ComfyUI's own LoRA loading, so the result renders exactly like the same LoRA "
                        "saved and loaded with the stock LoraLoader.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional text encoder to patch with the LoRA's text-encoder modules."),
                lora_input(tooltip="The LoRA to apply."),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly to modify the diffusion model (1 = as trained)."),
                io.Float.Input("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="How strongly to modify the text encoder (1 = as trained)."),
            ],
            outputs=[
                io.Model.Output("MODEL", display_name="MODEL", tooltip="The patched model (a clone)."),
                io.Clip.Output("CLIP", display_name="CLIP",
                               tooltip="The patched text encoder (a clone), or nothing when no clip was connected."),
            ],
        )

    @classmethod
    def execute(cls, model, lora, strength_model, strength_clip, clip=None) -> io.NodeOutput:
        import comfy.sd
        lf = as_lora(lora)
        if strength_model == 0 and (clip is None or strength_clip == 0):
            return io.NodeOutput(model, clip)
        m, c = comfy.sd.load_lora_for_models(model, clip, state_dict(lf), strength_model,
                                             strength_clip if clip is not None else 0)
        return io.NodeOutput(m, c)
