"""Block Impact Sweep through a real ComfyUI 0.3.75 server (HTTP API), from example_workflows/block_sweep.json
with the tiny SD1.5 and SDXL models substituted (chopshop_dev/workflows.py); plus the example file's own rules
(real model names, >= 20 steps, 1024 px, clip and negative wired) and the node's /object_info entry."""
import io
import json
import sys
import urllib.parse

import numpy as np
import pytest

from chopshop_dev.comfy_runtime import REPO, ComfyServer, make_base_dir
from chopshop_dev.tiny_sd15 import CKPT_NAME as SD15_CKPT, LORA_NAME as SD15_LORA, ensure_tiny_checkpoint, \
    ensure_tiny_lora
from chopshop_dev.tiny_sdxl import CKPT_NAME as SDXL_CKPT, LORA_NAME as SDXL_LORA, ensure_tiny_sdxl, ensure_tiny_sdxl_lora
from chopshop_dev import workflows

sys.path.insert(0, str(REPO))
from core.lora_file import read  # noqa: E402
from core.sweep_chart import grid_layout  # noqa: E402

INPUTS = ["model", "lora", "vae", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name",
          "scheduler", "mode", "group_size", "strength", "keep_share"]
SIZE, STEPS = 64, 2


def test_example_names_real_models_and_renders_at_least_20_steps():
    ui = workflows.load("block_sweep")
    assert workflows.rule_problems(ui) == []
    nodes = {n["id"]: n for n in ui["nodes"]}
    literals = [v for n in ui["nodes"] for v in n.get("widgets_values") or []]
    assert "sd_xl_base_1.0.safetensors" in literals and "your_sdxl_lora.safetensors" in literals
    assert nodes[5]["widgets_values"][:2] == [1024, 1024]
    sweep = nodes[6]
    assert sweep["widgets_values"][:2] == [123456789, "fixed"]
    assert sweep["widgets_values"][2:] == [22, 6.0, "dpmpp_2m", "karras", "solo", 4, 1.0, 0.9]
    links = workflows.link_rows(ui)
    wired = {i["name"]: links[i["link"]][:2] for i in sweep["inputs"] if i.get("link") is not None}
    assert wired["clip"] == (1, 1) and wired["negative"] == (4, 0) and wired["positive"] == (3, 0)
    assert len(nodes[4]["widgets_values"][0]) > 40                                # a real negative prompt


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = make_base_dir(tmp_path_factory.mktemp("sweep_base"))
    for ensure in (ensure_tiny_checkpoint, ensure_tiny_lora, ensure_tiny_sdxl, ensure_tiny_sdxl_lora):
        ensure(base / "models")
    with ComfyServer(base) as s:
        yield s


def png(srv, rec):
    from PIL import Image
    q = urllib.parse.urlencode({"filename": rec["filename"], "subfolder": rec.get("subfolder", ""),
                                "type": rec.get("type", "output")})
    return np.asarray(Image.open(io.BytesIO(srv.get_bytes("/view?" + q))).convert("RGB"))


@pytest.mark.comfy
def test_object_info_entry(srv):
    info = srv.get("/object_info")["ChopShopBlockSweep"]
    assert info["display_name"] == "Block Impact Sweep (Chop Shop)" and info["output_node"] is True
    assert list(info["input"]["required"]) == INPUTS and list(info["input"]["optional"]) == ["clip"]
    for name, spec in {**info["input"]["required"], **info["input"]["optional"]}.items():
        assert spec[1].get("tooltip"), name
    assert info["output_name"] == ["grid", "images", "report", "vector", "chart"]
    assert info["output"] == ["IMAGE", "IMAGE", "STRING", "STRING", "IMAGE"] and all(info["output_tooltips"])
    assert info["input"]["required"]["mode"][1]["options"] == ["solo", "knock-out", "groups", "presets"]
    assert "dpmpp_2m" in info["input"]["required"]["sampler_name"][1]["options"]
    locale = json.loads((REPO / "locales" / "en" / "nodeDefs.json").read_text())["ChopShopBlockSweep"]
    assert locale == workflows.locale_entry(info)
    assert (REPO / "web" / "docs" / "ChopShopBlockSweep.md").is_file()


def tiny_prompt(srv, checkpoint, lora, **widgets) -> dict:
    """example_workflows/block_sweep.json in API form, on the tiny checkpoint and LoRA."""
    info = srv.get("/object_info")
    files = {"sd_xl_base_1.0.safetensors": checkpoint, "your_sdxl_lora.safetensors": lora}
    ui = workflows.substitute(workflows.load("block_sweep"), info, files, SIZE, STEPS, widgets=widgets)
    return workflows.strip_meta(workflows.to_api(ui, info))


def run_example(srv, checkpoint, lora, **widgets):
    prompt = tiny_prompt(srv, checkpoint, lora, **widgets)
    assert prompt["5"]["inputs"]["width"] == SIZE and prompt["6"]["inputs"]["steps"] == STEPS
    assert prompt["1"]["inputs"]["ckpt_name"] == checkpoint and prompt["2"]["inputs"]["lora_name"] == lora
    return srv.run_prompt(prompt, timeout=1200)["outputs"]


def check_outputs(srv, out, architecture, mode):
    rep = json.loads(out["9"]["text"][0])                                  # the report, via Preview as Text
    assert rep == json.loads(json.dumps(out["6"]["chopshop_sweep"][0]))
    assert rep["mode"] == mode and rep["architecture"] == architecture
    assert rep["renders"] == len(rep["blocks"]) + 2
    for b in rep["blocks"]:
        assert set(b) >= {"label", "energy", "impact", "impact_pixels"} and b["impact"] >= 0
    impacts = [b["impact"] for b in rep["blocks"]]
    assert impacts == sorted(impacts, reverse=True) and impacts[0] > 0
    grid = png(srv, out["7"]["images"][0])
    lay = grid_layout(rep["renders"], SIZE, SIZE, 3)
    assert grid.shape == (lay["size"][1], lay["size"][0], 3)                 # one tile per render
    assert png(srv, out["8"]["images"][0]).shape[1] == 720                   # the chart
    kept = rep["suggested_blocks"]
    summary = out["10"]["text"][0]
    assert f"Kept: {', '.join(kept)}" in summary and f"vector: {rep['suggested_vector']}" in summary
    saved = out["11"]["text"][0]
    assert saved.startswith("chopshop/my_character_swept_")
    assert (srv.base_dir / "models" / "loras" / saved).is_file()
    return rep


@pytest.mark.comfy
def test_sd15_example_end_to_end(srv):
    out = run_example(srv, SD15_CKPT, SD15_LORA)
    rep = check_outputs(srv, out, "sd15", "solo")
    # the tiny model's output_blocks.0/.1 attentions are not SD1.5 layers: the core keeps them as non-block
    # modules (on in the full render, off in solo variants)
    lora = read(srv.base_dir / "models" / "loras" / SD15_LORA)
    assert lora.blocks() == ["INP01", "MID01"]
    assert sorted(b["label"] for b in rep["blocks"]) == lora.blocks()


@pytest.mark.comfy
def test_sdxl_example_end_to_end_in_groups_and_a_bad_group_size(srv):
    """SDXL through the example (groups mode keeps the CPU run short: IN / MID / OUT, 5 renders; solo on SDXL is
    covered in-process by test_sweep_comfy.py)."""
    out = run_example(srv, SDXL_CKPT, SDXL_LORA, mode="groups")
    rep = check_outputs(srv, out, "sdxl", "groups")
    assert sorted(b["label"] for b in rep["blocks"]) == ["IN", "MID", "OUT"] and rep["renders"] == 5
    assert all(b["impact"] > 0 for b in rep["blocks"])               # every block of this LoRA is trained
    prompt = tiny_prompt(srv, SDXL_CKPT, SDXL_LORA, group_size=0)
    status, body = srv.post_prompt(prompt)
    assert status == 400 and "6" in body["node_errors"]                # min=1: refused before it runs
    assert "group_size" in json.dumps(body["node_errors"]["6"])
