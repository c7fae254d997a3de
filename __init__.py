"""LoRA Chop Shop for ComfyUI: inspect, chop, resize, apply and save LoRA/LyCORIS files.

V3 entry point only; nothing runs at import (no device queries, folder scans or prints). The node
classes and the read-only HTTP routes are registered when ComfyUI calls ``comfy_entrypoint``.
"""
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from comfy_api.v0_0_2 import ComfyExtension

    from .nodes.apply_lora import ChopShopApplyLoRA
    from .nodes.block_chop import ChopShopBlockChop
    from .nodes.block_sweep import ChopShopBlockSweep
    from .nodes.from_lora_model import ChopShopFromLoraModel
    from .nodes.inspector import ChopShopBlockLayoutInspector
    from .nodes.load_lora import ChopShopLoadLoRA
    from .nodes.preset_picker import ChopShopPresetPicker
    from .nodes.routes import register_routes
    from .nodes.save_lora import ChopShopSaveLoRA
    from .nodes.svd_resize import ChopShopSVDResize

    register_routes()

    class ChopShopExtension(ComfyExtension):
        async def get_node_list(self):
            return [ChopShopLoadLoRA, ChopShopBlockLayoutInspector, ChopShopPresetPicker, ChopShopBlockChop,
                    ChopShopSVDResize, ChopShopApplyLoRA, ChopShopSaveLoRA, ChopShopFromLoraModel,
                    ChopShopBlockSweep]

    return ChopShopExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
