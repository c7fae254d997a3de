"""The Chop Shop nodes in a real ComfyUI 0.3.75 server (one server for the whole module): /object_info,
the example workflows (example_workflows/*.json, run with the tiny models swapped in by
chopshop_dev/workflows.py): SDXL end to end (inspect, preset, chop, resize, apply, render, save), the
saved file in the stock LoraLoader; Flux's LoRA part end to end on a synthetic Flux LoRA and the rest of
its graph checked against /object_info; node errors that leave the server serving; the /chopshop/ routes."""
import io
import json
import urllib.error
import urllib.parse

import numpy as np
import pytest

from chopshop_dev import synth
from chopshop_dev import workflows
from chopshop_dev.comfy_runtime import ComfyServer, make_base_dir
from chopshop_dev.tiny_sdxl import LORA_NAME, ensure_tiny_sdxl, ensure_tiny_sdxl_lora

pytestmark = pytest.mark.comfy

NODE_IDS = ["ChopShopLoadLoRA", "ChopShopBlockLayoutInspector", "ChopShopPresetPicker", "ChopShopBlockChop",
            "ChopShopSVDResize", "ChopShopApplyLoRA", "ChopShopSaveLoRA", "ChopShopFromLoraModel"]
EXPECTED_INPUTS = {
    "ChopShopLoadLoRA": (["lora_name"], []),
    "ChopShopBlockLayoutInspector": (["lora"], []),
    "ChopShopPresetPicker": (["preset"], ["lora"]),
    "ChopShopBlockChop": (["lora", "vector", "te_weight"], ["preset_name"]),
    "ChopShopSVDResize": (["lora", "rule", "value", "max_rank", "dtype"], ["model", "clip", "recipe"]),
    "ChopShopApplyLoRA": (["model", "lora", "strength_model", "strength_clip"], ["clip"]),
    "ChopShopSaveLoRA": (["lora", "filename_prefix"], []),
    "ChopShopFromLoraModel": (["lora_model"], []),
}
GARFIELD = "Garfield (Character+Style)"


TINY = 64            # latent side (px) of the tiny runs; the stitched comparison has 16 px gaps
GAP = 16


def api_workflow(srv, name="chop_compare", files=workflows.TINY_SDXL_FILES):
    """An example workflow in API form, tiny models and 64 px / 2 steps / cfg 1 swapped in."""
    info = srv.get("/object_info")
    ui = workflows.substitute(workflows.load(name), info, files, size=TINY, steps=2, cfg=1.0)
    return workflows.strip_meta(workflows.to_api(ui, info))


def panels(img, n):
    """The n renders of a side-by-side ImageStitch row (each TINY px wide, GAP px apart)."""
    assert img.shape[1] == n * TINY + (n - 1) * GAP, img.shape
    return [img[:, i * (TINY + GAP): i * (TINY + GAP) + TINY] for i in range(n)]


def pixels(png):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def image_of(srv, node_out):
    rec = node_out["images"][0]
    q = urllib.parse.urlencode({"filename": rec["filename"], "subfolder": rec.get("subfolder", ""),
                                "type": rec.get("type", "output")})
    return pixels(srv.get_bytes("/view?" + q))


def error_of(entry):
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return data
    return None


def get_status(srv, path):
    try:
        return 200, srv.get(path)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = make_base_dir(tmp_path_factory.mktemp("nodes_base"))
    ensure_tiny_sdxl(base / "models")
    ensure_tiny_sdxl_lora(base / "models")
    flux = synth.make_style("kohya", "flux", rank=4, seed=3)          # no tiny Flux model exists: LoRA part only
    synth.write(base / "models" / "loras" / workflows.TINY_FLUX_FILES["your_flux_lora.safetensors"], flux.sd)
    with ComfyServer(base) as s:
        yield s


@pytest.fixture(scope="module")
def workflow_run(srv):
    return srv.run_prompt(api_workflow(srv), timeout=900)


def test_object_info_lists_every_node_with_tooltips(srv):
    info = srv.get("/object_info")
    for nid in NODE_IDS:
        assert nid in info, nid
        node = info[nid]
        assert node["category"] == "loaders/LoRA Chop Shop"
        assert node["display_name"].endswith("(Chop Shop)")
        assert node["python_module"].startswith("custom_nodes.")
        req, opt = EXPECTED_INPUTS[nid]
        assert list(node["input"]["required"]) == req, nid
        assert list(node["input"].get("optional", {})) == opt, nid
        for name, spec in {**node["input"]["required"], **node["input"].get("optional", {})}.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{nid}.{name} has no tooltip"
        assert node["output_tooltips"] and all(node["output_tooltips"]), nid
    assert LORA_NAME in info["ChopShopLoadLoRA"]["input"]["required"]["lora_name"][1]["options"]
    assert GARFIELD in info["ChopShopPresetPicker"]["input"]["required"]["preset"][1]["options"]
    assert info["ChopShopSaveLoRA"]["output_node"] is True
    assert info["ChopShopBlockChop"]["output_name"] == ["LORA", "summary"]
    assert info["ChopShopBlockChop"]["output"][0] == "CHOPSHOP_LORA"


def test_workflow_chops_resizes_applies_renders_and_saves(srv, workflow_run):
    out = workflow_run["outputs"]
    report_text, layout = out["3"]["text"][0], out["3"]["chopshop_layout"][0]
    assert "Architecture: SDXL (sdxl)" in report_text
    assert layout["architecture"] == "sdxl" and len(layout["blocks"]) == 20
    assert "images" not in out["3"]          # the node shows its table; the chart is an output, not a preview
    chop = out["5"]["chopshop_chop"][0]
    assert chop["kept_blocks"] == ["OUT00", "OUT01", "OUT04", "OUT05"] and chop["preset"] == GARFIELD
    assert "Average Frobenius norm retention" in out["6"]["text"][0]
    saved = out["7"]["text"][0]
    assert saved.startswith("chopshop/garfield_") and saved.endswith(".safetensors")
    listed = srv.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
    assert saved in listed
    path = srv.base_dir / "models" / "loras" / saved
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert json.loads(meta["chopshop"])[-1]["preset"] == GARFIELD and meta["sshs_model_hash"]
    assert not any(k.startswith("lora_unet_input_blocks") for k in keys)

    # one side-by-side image: none | full | chopped | resized, same seed
    none, full, chopped, resized = panels(image_of(srv, out["63"]), 4)
    assert np.abs(none - full).mean() > 1.0, "the LoRA did not change the render"
    assert np.abs(full - chopped).mean() > 1.0, "chopping did not change the render"
    assert not np.array_equal(full, resized)

    # the saved file through the stock LoraLoader (model AND clip) renders bit-identically to the chopped
    # branch (Apply LoRA (Chop Shop) with clip connected)
    p = api_workflow(srv)
    stock = {k: v for k, v in p.items() if k in {"1", "8", "9", "11"}}
    stock["70"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": saved,
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
    for k in ("41", "42"):
        stock[k] = dict(p[k], inputs={**p[k]["inputs"], "clip": ["70", 1]})
    stock["43"] = dict(p["43"], inputs={**p["43"]["inputs"], "model": ["70", 0]})
    stock["44"] = p["44"]
    stock["45"] = {"class_type": "SaveImage", "inputs": {"images": ["44", 0], "filename_prefix": "stock"}}
    entry = srv.run_prompt(stock, timeout=600)
    assert np.array_equal(image_of(srv, entry["outputs"]["45"]), chopped)


def test_bad_inputs_are_node_errors_and_server_keeps_serving(srv):
    lora = {"class_type": "ChopShopLoadLoRA", "inputs": {"lora_name": LORA_NAME}}
    # unknown preset: V3 combos are not list-checked by 0.3.75's validation, so the node itself refuses it
    status, body = srv.post_prompt({"1": lora, "2": {"class_type": "ChopShopPresetPicker", "inputs": {
        "preset": "No Such Preset", "lora": ["1", 0]}}, "3": {"class_type": "ChopShopBlockChop", "inputs": {
            "lora": ["1", 0], "vector": ["2", 0], "te_weight": 1.0}}, "4": {"class_type": "ChopShopSaveLoRA",
                                                                             "inputs": {"lora": ["3", 0], "filename_prefix": "x"}}})
    if status == 400:   # a core that list-checks V3 combos
        assert "2" in body["node_errors"] and "preset" in json.dumps(body["node_errors"]["2"]), body
    else:
        e = error_of(srv.wait_history(body["prompt_id"], timeout=300))
        assert e and e["node_type"] == "ChopShopPresetPicker", e
        assert "unknown preset 'No Such Preset'" in e["exception_message"]

    def run(vector, prefix, **chop):
        prompt = {"1": lora, "2": {"class_type": "ChopShopBlockChop", "inputs": {
            "lora": ["1", 0], "vector": vector, "te_weight": 1.0, **chop}},
                  "3": {"class_type": "ChopShopSaveLoRA", "inputs": {"lora": ["2", 0], "filename_prefix": prefix}}}
        status, body = srv.post_prompt(prompt)
        assert status == 200, body
        return srv.wait_history(body["prompt_id"], timeout=300)

    e = error_of(run("1,0,1", "bad_len"))
    assert e and e["node_type"] == "ChopShopBlockChop"
    assert "block vector has 3 numbers; expected 21" in e["exception_message"]
    e = error_of(run("", "empty"))
    assert e and "empty block vector" in e["exception_message"]
    for bad in ("../../x", "/etc/x", "a/../../x"):
        e = error_of(run("1," + ",".join(["1"] * 20), bad))
        assert e and e["node_type"] == "ChopShopSaveLoRA", bad
        assert "refused" in e["exception_message"] or "absolute" in e["exception_message"] \
            or "'..'" in e["exception_message"], e["exception_message"]
    assert not (srv.base_dir / "x.safetensors").exists()
    # the server still serves and a later prompt succeeds (subfolders inside chopshop/ are fine)
    ok = run("1," + ",".join(["1"] * 11 + ["0"] * 9), "sub/dir/ok")
    assert ok["status"]["status_str"] == "success", ok["status"]
    assert ok["outputs"]["3"]["text"][0] == "chopshop/sub/dir/ok_00001.safetensors"
    again = run("1," + ",".join(["1"] * 10 + ["0"] * 10), "sub/dir/ok")
    assert again["outputs"]["3"]["text"][0] == "chopshop/sub/dir/ok_00002.safetensors"


def test_routes(srv):
    lay = srv.get("/chopshop/layout?" + urllib.parse.urlencode({"lora": LORA_NAME}))
    assert lay["architecture"] == "sdxl" and lay["architecture_title"] == "SDXL"
    assert lay["present"] == lay["full_layout"] and len(lay["present"]) == 20
    assert lay["blocks"][0] == {"label": "INP01", "name": "input_blocks.1", "modules": 3, "tensors": 9}
    assert lay["vector_template"].startswith("1,INP01,INP02")
    arch = srv.get("/chopshop/layout?architecture=sd15")
    assert arch["present"] == arch["full_layout"] and len(arch["full_layout"]) == 26
    archs = srv.get("/chopshop/architectures")
    assert {"id", "title", "full_layout"} <= set(archs[0]) and "sdxl" in [a["id"] for a in archs]
    rows = srv.get("/chopshop/presets")
    assert GARFIELD in [r["name"] for r in rows]
    assert all(r["layout"] == "flux" for r in srv.get("/chopshop/presets?architecture=flux"))
    v = srv.get("/chopshop/validate?" + urllib.parse.urlencode({"vector": "1,0,1", "lora": LORA_NAME}))
    assert v["ok"] is False and "block vector has 3 numbers" in v["error"] and v["weights"] == {}
    good = "1," + ",".join(["0"] * 11 + ["1", "1", "0", "0", "1", "1", "0", "0", "0"])
    v = srv.get("/chopshop/validate?" + urllib.parse.urlencode({"vector": good, "architecture": "sdxl"}))
    assert v["ok"] is True and v["error"] is None and v["weights"]["OUT01"] == 1.0 and v["weights"]["INP04"] == 0.0
    assert v["mode"] == "positional"
    assert get_status(srv, "/chopshop/layout?lora=missing.safetensors")[0] == 404
    assert get_status(srv, "/chopshop/layout?lora=../../etc/passwd.safetensors")[0] == 404
    assert get_status(srv, "/chopshop/layout?architecture=nope")[0] == 404
    status, body = get_status(srv, "/chopshop/layout")
    assert status == 400 and "error" in body
    assert srv.get("/system_stats")["system"]["comfyui_version"] == "0.3.75"   # still serving


def test_example_workflows_match_this_servers_nodes(srv):
    """Every example workflow (real model names) is a valid graph for this ComfyUI: node types, input
    names, link types, widget values (model files this server lacks aside)."""
    info = srv.get("/object_info")
    assert set(workflows.names()) >= {"chop_compare", "flux_chop_compare"}
    for name in workflows.names():
        ui = workflows.load(name)
        assert workflows.check_graph(ui, info) == [], name
        assert workflows.rule_problems(ui) == [], name
    # the checker is not blind: a wrong link type, a bad combo value and a missing input are caught
    ui = workflows.load("chop_compare")
    ks = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    ks["widgets_values"][4] = "no_such_sampler"
    lk = next(lk for lk in ui["links"] if lk[5] == "MODEL")
    lk[5] = "CLIP"
    ui["nodes"][0]["type"] = "NoSuchNode"
    bad = workflows.check_graph(ui, info)
    assert any("no_such_sampler" in b for b in bad) and any("NoSuchNode" in b for b in bad), bad


def test_flux_workflow_lora_part_runs(srv):
    """The Flux workflow's LoRA part (load -> inspect, preset -> chop -> save) on a synthetic Flux LoRA."""
    api = api_workflow(srv, "flux_chop_compare", workflows.TINY_FLUX_FILES)
    by_type = {v["class_type"]: k for k, v in api.items()}
    part = workflows.ancestors(api, [by_type["ChopShopSaveLoRA"], by_type["ChopShopBlockLayoutInspector"]])
    assert {v["class_type"] for v in part.values()} == {
        "ChopShopLoadLoRA", "ChopShopBlockLayoutInspector", "ChopShopPresetPicker", "ChopShopBlockChop",
        "ChopShopSaveLoRA"}
    out = srv.run_prompt(part, timeout=600)["outputs"]
    layout = out[by_type["ChopShopBlockLayoutInspector"]]["chopshop_layout"][0]
    assert layout["architecture"] == "flux"
    present = [b["label"] for b in layout["blocks"]]
    chop = out[by_type["ChopShopBlockChop"]]["chopshop_chop"][0]
    assert chop["preset"] == "Flux Double only"
    assert chop["kept_blocks"] == [b for b in present if b.startswith("D")] and chop["kept_blocks"]
    saved = out[by_type["ChopShopSaveLoRA"]]["text"][0]
    from safetensors import safe_open
    with safe_open(str(srv.base_dir / "models" / "loras" / saved), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("single_blocks" in k for k in keys)
    assert any("double_blocks" in k for k in keys)
