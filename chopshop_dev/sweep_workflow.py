"""The Block Impact Sweep example workflow with the tiny test models swapped in, and its UI-format twin.

chopshop_dev/block_sweep_api.json is the API form of example_workflows/block_sweep.json, what a real SDXL user runs (sd_xl_base_1.0, a character LoRA,
1024 px, 22 steps). Tests and the demo run the same graph on the tiny fixtures: ``tiny_workflow`` returns a
copy with the checkpoint and LoRA names replaced, every latent size shrunk and every ``steps`` lowered.

    python -m chopshop_dev.sweep_workflow --export-ui    # rewrite example_workflows/block_sweep.json from the API file
                                              # (starts the runtime's ComfyUI for /object_info) and print
                                              # the node's locales/en/nodeDefs.json entry
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
API_WORKFLOW = Path(__file__).resolve().parent / "block_sweep_api.json"
UI_WORKFLOW = REPO / "example_workflows" / "block_sweep.json"

# node id -> (x, y, width, height) in the UI twin: loaders | prompts | sweep | outputs
LAYOUT = {"1": (40, 40, 340, 100), "2": (40, 230, 340, 80), "5": (40, 410, 340, 130),
          "3": (420, 40, 420, 200), "4": (420, 270, 420, 200),
          "6": (880, 40, 400, 560),
          "7": (1320, 40, 520, 560), "8": (1320, 640, 520, 300), "9": (880, 640, 400, 300),
          "10": (1880, 40, 340, 160), "11": (1880, 720, 340, 110)}

NAME_INPUTS = {"ckpt_name": "checkpoint", "lora_name": "lora"}


def load_api(path: Path = API_WORKFLOW) -> dict:
    """The API-format prompt (without the ``_meta`` titles the server does not take)."""
    api = json.loads(path.read_text())
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in api.items()}


def tiny_workflow(api: dict, checkpoint: str, lora: str, size: int = 64, steps: int = 2, **widgets) -> dict:
    """A copy of an API-format prompt for the tiny models: every ``ckpt_name`` -> ``checkpoint``, every
    ``lora_name`` -> ``lora``, every literal ``width``/``height`` -> ``size``, every literal ``steps`` ->
    ``steps``; ``widgets`` (name=value) override any other literal input of that name. Links are kept."""
    out = copy.deepcopy(api)
    names = {"checkpoint": checkpoint, "lora": lora}
    for node in out.values():
        inputs = node["inputs"]
        for key, value in list(inputs.items()):
            if isinstance(value, list):
                continue
            if key in NAME_INPUTS:
                inputs[key] = names[NAME_INPUTS[key]]
            elif key in ("width", "height"):
                inputs[key] = size
            elif key == "steps":
                inputs[key] = steps
            elif key in widgets:
                inputs[key] = widgets[key]
    return out


def ui_twin(api_with_meta: dict, object_info: dict) -> dict:
    """The UI (LiteGraph) form of the API workflow, laid out by LAYOUT (chopshop_dev.workflows.api_to_ui)."""
    from .workflows import api_to_ui
    ui = api_to_ui(api_with_meta, object_info, LAYOUT)
    for node in ui["nodes"]:
        x, y, w, h = LAYOUT[str(node["id"])]
        node["pos"], node["size"] = [x, y], [w, h]
    return ui


def locale_entry(info: dict) -> dict:
    """The locales/en/nodeDefs.json entry of a node, from its /object_info entry."""
    specs = {**info["input"]["required"], **info["input"].get("optional", {})}
    order = info["input_order"]["required"] + info["input_order"].get("optional", [])
    return {"display_name": info["display_name"], "description": info["description"],
            "inputs": {n: {"name": n, "tooltip": specs[n][1]["tooltip"]} for n in order},
            "outputs": {str(i): {"name": n, "tooltip": t}
                        for i, (n, t) in enumerate(zip(info["output_name"], info["output_tooltips"]))}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--export-ui"]:
        print(__doc__)
        return 2
    import tempfile
    from chopshop_dev.comfy_runtime import ComfyServer, make_base_dir
    with tempfile.TemporaryDirectory() as tmp, ComfyServer(make_base_dir(tmp)) as srv:
        info = srv.get("/object_info")
    ui = ui_twin(json.loads(API_WORKFLOW.read_text()), info)
    UI_WORKFLOW.write_text(json.dumps(ui, indent=1) + "\n")
    print("wrote", UI_WORKFLOW)
    print(json.dumps({"ChopShopBlockSweep": locale_entry(info["ChopShopBlockSweep"])}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
