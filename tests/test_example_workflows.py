"""The shipped example workflows (example_workflows/*.json) are for real users: real model names, Apply LoRA
with its clip wired, at least 20 sampler steps, one template entry with a real thumbnail each. Runs without
ComfyUI; tests/test_nodes_workflow.py runs them (tiny models swapped in) on a real server."""
import json

import numpy as np
from PIL import Image

from chopshop_dev import workflows


def test_every_example_follows_the_shipping_rules():
    names = workflows.names()
    assert {"chop_compare", "flux_chop_compare"} <= set(names)
    for name in names:
        ui = workflows.load(name)
        assert workflows.rule_problems(ui) == [], name
        assert any(n["type"] in workflows.RENDERING_NODES for n in ui["nodes"]), name
        applies = [n for n in ui["nodes"] if n["type"] == "ChopShopApplyLoRA"]
        assert applies or name == "block_sweep", name      # the sweep patches the model itself
        assert all(any(i["name"] == "clip" and i["link"] for i in n["inputs"]) for n in applies)


def test_rule_checker_catches_each_rule():
    ui = workflows.load("chop_compare")
    ks = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    ks["widgets_values"][2] = 19
    apply = next(n for n in ui["nodes"] if n["type"] == "ChopShopApplyLoRA")
    next(i for i in apply["inputs"] if i["name"] == "clip")["link"] = None
    ui["nodes"][0]["widgets_values"][0] = "models/tiny_sdxl.safetensors"
    bad = workflows.rule_problems(ui)
    assert len(bad) == 3 and any("19 steps" in b for b in bad) and any("clip" in b for b in bad), bad


def test_sdxl_example_is_the_real_comparison():
    ui = workflows.load("chop_compare")
    types = [n["type"] for n in ui["nodes"]]
    vals = {n["type"]: n["widgets_values"] for n in ui["nodes"]}
    assert vals["CheckpointLoaderSimple"] == ["sd_xl_base_1.0.safetensors"]
    assert vals["EmptyLatentImage"][:2] == [1024, 1024]
    samplers = [n["widgets_values"] for n in ui["nodes"] if n["type"] == "KSampler"]
    assert len(samplers) == 4                                    # none / full / chopped / resized
    assert {s[0] for s in samplers} == {samplers[0][0]}          # one seed
    assert all(20 <= s[2] <= 30 and 5 <= s[3] <= 7 for s in samplers), samplers
    prompts = [n for n in ui["nodes"] if n["type"] == "PrimitiveStringMultiline"]
    assert len(prompts) == 2 and prompts[0]["widgets_values"] != prompts[1]["widgets_values"]
    assert {"ChopShopSVDResize", "ChopShopSaveLoRA", "ChopShopBlockChop", "ImageStitch", "SaveImage"} <= set(types)
    # each sampler's positive and negative come from different prompts
    links = workflows.link_rows(ui)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for n in ui["nodes"]:
        if n["type"] == "KSampler":
            src = {i["name"]: by_id[links[i["link"]][0]] for i in n["inputs"] if i["name"] in ("positive", "negative")}
            texts = [links[next(i for i in s["inputs"] if i["name"] == "text")["link"]][0] for s in src.values()]
            assert texts[0] != texts[1], n["id"]


def test_one_template_entry_per_workflow_with_a_thumbnail():
    files = sorted(p.name for p in workflows.EXAMPLES.iterdir())
    assert not [f for f in files if f.endswith("_api.json")], files        # no API twin as a 2nd entry
    for name in workflows.names():
        thumb = workflows.EXAMPLES / f"{name}.jpg"
        assert thumb.is_file(), thumb
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 400
            grey = np.asarray(im.convert("L").resize((32, 32)))
            assert len(np.unique(grey)) > 40                            # a picture, not a placeholder
        json.loads((workflows.EXAMPLES / f"{name}.json").read_text())
