#!/usr/bin/env python3
"""Write example_workflows/chop_compare.json (SDXL), flux_chop_compare.json (Flux) and block_sweep.json (SDXL
Block Impact Sweep) from the graphs below.

    python scripts/build_example_workflows.py OBJECT_INFO.json     # a server's GET /object_info, saved

The shipped files are what the frontend loads (Browse Templates); they name real models. Tests and the demo
swap in the tiny fixtures at run time (chopshop_dev/workflows.py). Edit the graphs or the layout here and
re-run, or edit the workflow in ComfyUI and save it over the file.
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chopshop_dev.workflows import EXAMPLES, api_to_ui  # noqa: E402

POSITIVE = ("photo of a ginger cat wearing a small wizard hat, sitting on a stack of old books, soft window "
            "light, shallow depth of field, detailed fur")
NEGATIVE = "blurry, lowres, jpeg artifacts, watermark, text, signature, deformed, extra limbs, bad anatomy"
SEED = 123456


def node(cls, title, **inputs):
    return {"class_type": cls, "inputs": inputs, "_meta": {"title": title}}


def side_by_side(g: dict, names: list[str], prefix: str) -> None:
    """Stitch the branches' VAE Decodes (ids 24, 34, 44, ...) left to right with ImageStitch nodes 60, 61, ...
    and save the strip with the next id."""
    prev = "24"
    for i, name in enumerate(names[1:]):
        title = f"{names[0]} | {name}" if i == 0 else f"| {name}"
        g[str(60 + i)] = node("ImageStitch", title, image1=[prev, 0], direction="right", match_image_size=True,
                              spacing_width=16, spacing_color="white", image2=[str(34 + 10 * i), 0])
        prev = str(60 + i)
    g[str(60 + len(names) - 1)] = node("SaveImage", f"Side by side: {' | '.join(names)}", images=[prev, 0],
                                       filename_prefix=prefix)


def sdxl_graph():
    g = {
        "1": node("CheckpointLoaderSimple", "SDXL base", ckpt_name="sd_xl_base_1.0.safetensors"),
        "2": node("ChopShopLoadLoRA", "Load LoRA File (Chop Shop)", lora_name="your_sdxl_lora.safetensors"),
        "3": node("ChopShopBlockLayoutInspector", "Block Layout Inspector (Chop Shop)", lora=["2", 0]),
        "4": node("ChopShopPresetPicker", "Preset Picker (Chop Shop)", preset="Garfield (Character+Style)",
                  lora=["2", 0]),
        "5": node("ChopShopBlockChop", "Block Chop (Chop Shop)", lora=["2", 0], vector=["4", 0], te_weight=1.0,
                  preset_name=["4", 1]),
        "6": node("ChopShopSVDResize", "SVD Resize (Chop Shop)", lora=["2", 0], rule="sv_fro", value=0.9,
                  max_rank=0, dtype="fp16"),
        "7": node("ChopShopSaveLoRA", "Save LoRA: the chopped one", lora=["5", 0], filename_prefix="garfield"),
        "8": node("EmptyLatentImage", "Latent 1024x1024", width=1024, height=1024, batch_size=1),
        "9": node("PrimitiveStringMultiline", "Positive prompt", value=POSITIVE),
        "11": node("PrimitiveStringMultiline", "Negative prompt", value=NEGATIVE),
    }
    branches = [("none", None), ("full", "2"), ("chopped", "5"), ("resized", "6")]
    for i, (name, lora) in enumerate(branches):
        b = 20 + 10 * i
        model, clip = ["1", 0], ["1", 1]
        if lora:
            g[str(b)] = node("ChopShopApplyLoRA", f"Apply LoRA: {name}", model=["1", 0], lora=[lora, 0],
                             strength_model=1.0, strength_clip=1.0, clip=["1", 1])
            model, clip = [str(b), 0], [str(b), 1]
        g[str(b + 1)] = node("CLIPTextEncode", f"Positive ({name})", text=["9", 0], clip=clip)
        g[str(b + 2)] = node("CLIPTextEncode", f"Negative ({name})", text=["11", 0], clip=clip)
        g[str(b + 3)] = node("KSampler", f"KSampler ({name})", model=model, seed=SEED, steps=25, cfg=6.0,
                             sampler_name="dpmpp_2m", scheduler="karras", positive=[str(b + 1), 0],
                             negative=[str(b + 2), 0], latent_image=["8", 0], denoise=1.0)
        g[str(b + 4)] = node("VAEDecode", f"VAE Decode ({name})", samples=[str(b + 3), 0], vae=["1", 2])
    side_by_side(g, [name for name, _ in branches], "chopshop/compare")
    return g


def sdxl_layout():
    # node id -> (x, y, width, height); y is the body top (the title bar sits 30 px above it). Spaced for the
    # taller of the classic and Nodes 2.0 boxes, after a run too (report boxes have a fixed height).
    lay = {
        "1": (0, 30, 360, 100), "2": (0, 230, 360, 60), "9": (0, 382, 360, 140), "11": (0, 592, 360, 104),
        "8": (0, 766, 360, 110),
        "4": (400, 30, 500, 190), "5": (400, 288, 500, 400), "7": (400, 808, 500, 110),
        "3": (940, 30, 500, 490), "6": (940, 590, 500, 400),
    }
    for i in range(4):
        b, x = 20 + 10 * i, 1480 + 340 * i
        lay.update({str(b): (x, 30, 310, 130), str(b + 1): (x, 264, 310, 100), str(b + 2): (x, 438, 310, 100),
                    str(b + 3): (x, 612, 310, 320), str(b + 4): (x, 1006, 310, 50)})
    lay.update({"60": (1480, 1148, 310, 200), "61": (1820, 1148, 310, 200), "62": (2160, 1148, 310, 200),
                "63": (2500, 1148, 560, 420)})
    return lay


def flux_graph():
    g = {
        "1": node("UNETLoader", "Flux dev (diffusion model)", unet_name="flux1-dev.safetensors",
                  weight_dtype="default"),
        "2": node("DualCLIPLoader", "CLIP-L + T5-XXL", clip_name1="clip_l.safetensors",
                  clip_name2="t5xxl_fp16.safetensors", type="flux"),
        "3": node("VAELoader", "Flux VAE", vae_name="ae.safetensors"),
        "4": node("ChopShopLoadLoRA", "Load LoRA File (Chop Shop)", lora_name="your_flux_lora.safetensors"),
        "5": node("ChopShopBlockLayoutInspector", "Block Layout Inspector (Chop Shop)", lora=["4", 0]),
        "6": node("ChopShopPresetPicker", "Preset Picker (Chop Shop)", preset="Flux Double only", lora=["4", 0]),
        "7": node("ChopShopBlockChop", "Block Chop (Chop Shop)", lora=["4", 0], vector=["6", 0], te_weight=1.0,
                  preset_name=["6", 1]),
        "8": node("ChopShopSaveLoRA", "Save LoRA: the chopped one", lora=["7", 0], filename_prefix="flux_double"),
        "9": node("PrimitiveStringMultiline", "Prompt", value=POSITIVE),
        "10": node("EmptySD3LatentImage", "Latent 1024x1024", width=1024, height=1024, batch_size=1),
    }
    for i, (name, lora) in enumerate([("none", None), ("full", "4"), ("chopped", "7")]):
        b = 20 + 10 * i
        model, clip = ["1", 0], ["2", 0]
        if lora:
            g[str(b)] = node("ChopShopApplyLoRA", f"Apply LoRA: {name}", model=["1", 0], lora=[lora, 0],
                             strength_model=1.0, strength_clip=1.0, clip=["2", 0])
            model, clip = [str(b), 0], [str(b), 1]
        g[str(b + 1)] = node("CLIPTextEncode", f"Prompt ({name})", text=["9", 0], clip=clip)
        g[str(b + 2)] = node("FluxGuidance", f"Guidance ({name})", conditioning=[str(b + 1), 0], guidance=3.5)
        g[str(b + 5)] = node("ConditioningZeroOut", f"Empty negative ({name})", conditioning=[str(b + 1), 0])
        g[str(b + 3)] = node("KSampler", f"KSampler ({name})", model=model, seed=SEED, steps=20, cfg=1.0,
                             sampler_name="euler", scheduler="simple", positive=[str(b + 2), 0],
                             negative=[str(b + 5), 0], latent_image=["10", 0], denoise=1.0)
        g[str(b + 4)] = node("VAEDecode", f"VAE Decode ({name})", samples=[str(b + 3), 0], vae=["3", 0])
    side_by_side(g, ["none", "full", "chopped"], "chopshop/flux_compare")
    return g


def flux_layout():
    lay = {
        "1": (0, 30, 360, 90), "2": (0, 216, 360, 130), "3": (0, 470, 360, 60), "4": (0, 622, 360, 60),
        "9": (0, 774, 360, 140), "10": (0, 984, 360, 110),
        "6": (400, 30, 560, 190), "7": (400, 323, 560, 530), "8": (400, 923, 560, 110),
        "5": (1000, 30, 500, 590),
    }
    for i in range(3):
        b, x = 20 + 10 * i, 1540 + 340 * i
        lay.update({str(b): (x, 30, 310, 130), str(b + 1): (x, 264, 310, 100), str(b + 2): (x, 438, 310, 80),
                    str(b + 5): (x, 590, 310, 50), str(b + 3): (x, 708, 310, 320), str(b + 4): (x, 1102, 310, 50)})
    lay.update({"60": (1540, 1244, 310, 200), "61": (1880, 1244, 310, 200), "62": (2220, 1244, 560, 420)})
    return lay


SWEEP_POSITIVE = ("photo of my_character standing in a sunlit park, looking at the viewer, detailed face, sharp "
                  "focus, natural light")
SWEEP_NEGATIVE = ("blurry, lowres, bad anatomy, bad hands, extra fingers, deformed, watermark, signature, text, "
                  "jpeg artifacts")


def sweep_graph():
    """Block Impact Sweep on SDXL: solo sweep at 1024 px, 22 steps; grid, chart and report out; the suggested
    vector chopped and saved."""
    return {
        "1": node("CheckpointLoaderSimple", "SDXL base checkpoint", ckpt_name="sd_xl_base_1.0.safetensors"),
        "2": node("ChopShopLoadLoRA", "Load LoRA File (Chop Shop)", lora_name="your_sdxl_lora.safetensors"),
        "3": node("CLIPTextEncode", "Positive prompt", text=SWEEP_POSITIVE, clip=["1", 1]),
        "4": node("CLIPTextEncode", "Negative prompt", text=SWEEP_NEGATIVE, clip=["1", 1]),
        "5": node("EmptyLatentImage", "Empty Latent 1024x1024", width=1024, height=1024, batch_size=1),
        "6": node("ChopShopBlockSweep", "Block Impact Sweep (Chop Shop)", model=["1", 0], clip=["1", 1],
                  lora=["2", 0], vae=["1", 2], positive=["3", 0], negative=["4", 0], latent_image=["5", 0],
                  seed=123456789, steps=22, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras", mode="solo",
                  group_size=4, strength=1.0, keep_share=0.9),
        "7": node("SaveImage", "Sweep grid", images=["6", 0], filename_prefix="chopshop/sweep_grid"),
        "8": node("SaveImage", "Impact chart", images=["6", 4], filename_prefix="chopshop/sweep_chart"),
        "9": node("PreviewAny", "Sweep report (JSON)", source=["6", 2]),
        "10": node("ChopShopBlockChop", "Block Chop with the suggested vector", lora=["2", 0], vector=["6", 3],
                   te_weight=1.0),
        "11": node("ChopShopSaveLoRA", "Save the chopped LoRA", lora=["10", 0], filename_prefix="my_character_swept"),
    }


def sweep_layout():
    """Loaders | prompts | sweep | outputs."""
    return {"1": (40, 40, 340, 100), "2": (40, 230, 340, 80), "5": (40, 410, 340, 130),
            "3": (420, 40, 420, 200), "4": (420, 270, 420, 200), "6": (880, 40, 400, 560),
            "7": (1320, 40, 520, 560), "8": (1320, 640, 520, 300), "9": (880, 640, 400, 300),
            "10": (1880, 40, 340, 160), "11": (1880, 720, 340, 110)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    info = json.loads(Path(argv[0]).read_text())
    for name, graph, layout in (("chop_compare", sdxl_graph(), sdxl_layout()),
                                ("flux_chop_compare", flux_graph(), flux_layout()),
                                ("block_sweep", sweep_graph(), sweep_layout())):
        ui = api_to_ui(graph, info, layout)
        path = EXAMPLES / f"{name}.json"
        path.write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
