"""Hostile input through the real ComfyUI 0.3.75 (in-process, nodes loaded as main.py does): the /chopshop/
routes answer 400/404 with strict JSON and never 500; the Load LoRA node raises a one-line node error for
every malformed file; Save LoRA refuses broken LoRAs and prefixes or symlinked folders that lead outside the
loras folders; nothing is written, inputs keep their sha256."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.parse
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile  # noqa: E402
from chopshop_dev.comfy_runtime import load_comfy_inprocess  # noqa: E402

pytestmark = pytest.mark.comfy


def strict_json(raw: bytes):
    def refuse(word):
        raise AssertionError(f"non-strict JSON constant {word}")
    return json.loads(raw, parse_constant=refuse)


@pytest.fixture(scope="module")
def comfy(comfy_base_dir, tmp_path_factory):
    ns = load_comfy_inprocess(comfy_base_dir, with_nodes=True)
    ns.N = ns.nodes.NODE_CLASS_MAPPINGS
    ns.routes = next(m for name, m in list(sys.modules.items())
                     if name.endswith(".nodes.routes") and hasattr(m, "ROUTES") and hasattr(m, "HttpError"))
    ns.loras = Path(comfy_base_dir) / "models" / "loras"
    ns.hostile = ns.loras / "hostile"
    ns.hostile.mkdir(exist_ok=True)
    for name, data in hostile.CONTAINERS.items():
        (ns.hostile / f"{name}.safetensors").write_bytes(data)
    for name, (sd, _) in hostile.MODULES.items():
        hostile.write_sd(ns.hostile / f"m_{name}.safetensors", sd)
    ns.outside = tmp_path_factory.mktemp("outside_loras")
    hostile.write_sd(ns.outside / "good.safetensors", hostile.good_sd())
    return ns


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (symlinks not followed) with its sha256: proof that nothing was written."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = "link" if p.is_symlink() else hostile.sha256(p)
    return out


def get(comfy, path: str, **query):
    from aiohttp.test_utils import make_mocked_request
    handler = comfy.routes._handler(comfy.routes.ROUTES[path])
    req = make_mocked_request("GET", path + "?" + urllib.parse.urlencode(query))
    resp = comfy.loop.run_until_complete(handler(req)) if not comfy.loop.is_running() else \
        asyncio.run_coroutine_threadsafe(handler(req), comfy.loop).result()
    return resp.status, strict_json(resp.body)


def assert_node_error(fn, *words):
    with pytest.raises(Exception) as e:
        fn()
    # the pack's own input-error type (imported under ComfyUI's module name): a node error, not a crash
    assert any(c.__name__ == "ChopShopError" for c in type(e.value).__mro__), repr(e.value)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


@pytest.mark.parametrize("name", sorted(hostile.CONTAINERS))
def test_malformed_file_routes_400_and_load_node_error(comfy, name):
    before = snapshot(comfy.loras)
    rel = f"hostile/{name}.safetensors"
    for path, query in (("/chopshop/layout", {"lora": rel}),
                        ("/chopshop/validate", {"lora": rel, "vector": "1,1,1,1"})):
        status, body = get(comfy, path, **query)
        assert status == 400, (status, body)
        assert name in body["error"] and "\n" not in body["error"]
    assert_node_error(lambda: comfy.N["ChopShopLoadLoRA"].execute(rel), name)
    assert snapshot(comfy.loras) == before


@pytest.mark.parametrize("name", sorted(hostile.MODULES))
def test_broken_module_load_inspect_then_chop_and_save_refuse(comfy, name):
    sd, module = hostile.MODULES[name]
    before = snapshot(comfy.loras)
    rel = f"hostile/m_{name}.safetensors"
    status, body = get(comfy, "/chopshop/layout", lora=rel)           # header only: the layout is fine
    assert status == 200 and body["present"] == ["INP04", "MID01", "OUT01"]
    lora = comfy.N["ChopShopLoadLoRA"].execute(rel).args[0]
    text = comfy.N["ChopShopBlockLayoutInspector"].execute(lora).args[0]
    if name != "unknown_key_nan":
        assert "Broken modules: 1" in text and module in text
    assert_node_error(lambda: comfy.N["ChopShopBlockChop"].execute(lora, "1,1,1,1", 1.0), module)
    assert_node_error(lambda: comfy.N["ChopShopSaveLoRA"].execute(lora, "hostile_out"), module)
    assert snapshot(comfy.loras) == before


def test_save_refuses_nan_from_a_lora_model_dict(comfy):
    sd = hostile.good_sd()
    sd[f"{hostile.MID}.lora_up.weight"][0, 0] = float("inf")
    lora = comfy.N["ChopShopFromLoraModel"].execute(sd).args[0]
    before = snapshot(comfy.loras)
    assert_node_error(lambda: comfy.N["ChopShopSaveLoRA"].execute(lora, "from_dict"), hostile.MID)
    assert snapshot(comfy.loras) == before


@pytest.mark.parametrize("query,status", [
    ({"lora": ""}, 400), ({"lora": "   "}, 400), ({"lora": "missing.safetensors"}, 404),
    ({"lora": "../../etc/passwd.safetensors"}, 404), ({"lora": "hostile/x.ckpt"}, 400),
    ({"architecture": "nonsense"}, 404),
])
def test_route_names(comfy, query, status):
    got, body = get(comfy, "/chopshop/layout", **query)
    assert got == status and body["error"]


def test_route_blank_lora_on_validate_is_400(comfy):
    status, body = get(comfy, "/chopshop/validate", vector="1,1", lora=" ")
    assert status == 400


def test_validate_with_an_architecture_speaks_of_the_layout(comfy):
    status, body = get(comfy, "/chopshop/validate", vector="1,0,1", architecture="sdxl")
    assert status == 200 and body["ok"] is False
    assert "of the SDXL layout" in body["error"] and "in this file" not in body["error"]


def test_presets_route_unknown_architecture_and_bad_user_file(comfy, tmp_path, monkeypatch):
    status, body = get(comfy, "/chopshop/presets", architecture="nonsense")
    assert status == 404 and "sdxl" in body["error"]
    for name in ("nan_global", "bad_utf8", "weights_list", "deeply_nested"):
        user = tmp_path / f"{name}.json"
        user.write_bytes(hostile.PRESET_FILES[name])
        monkeypatch.setenv("CHOPSHOP_USER_PRESETS", str(user))
        status, body = get(comfy, "/chopshop/presets")
        assert status == 400 and str(user) in body["error"]


def test_symlinked_file_leading_outside_is_refused(comfy):
    link = comfy.hostile / "escape.safetensors"
    if not link.is_symlink():
        link.symlink_to(comfy.outside / "good.safetensors")
    before = snapshot(comfy.loras)
    status, body = get(comfy, "/chopshop/layout", lora="hostile/escape.safetensors")
    assert status == 400 and "outside the loras folders" in body["error"]
    assert_node_error(lambda: comfy.N["ChopShopLoadLoRA"].execute("hostile/escape.safetensors"),
                      "outside the loras folders")
    assert snapshot(comfy.loras) == before


def test_symlinked_folder_leading_outside_is_refused(comfy):
    link = comfy.loras / "linked_outside"
    if not link.is_symlink():
        link.symlink_to(comfy.outside, target_is_directory=True)
    status, body = get(comfy, "/chopshop/layout", lora="linked_outside/good.safetensors")
    assert status == 400 and "outside the loras folders" in body["error"]
    assert_node_error(lambda: comfy.N["ChopShopLoadLoRA"].execute("linked_outside/good.safetensors"),
                      "outside the loras folders")


def test_save_through_a_symlinked_subfolder_is_refused(comfy, tmp_path):
    lora = comfy.N["ChopShopFromLoraModel"].execute(hostile.good_sd()).args[0]
    target = tmp_path / "elsewhere"
    target.mkdir()
    shop = comfy.loras / "chopshop"
    shop.mkdir(exist_ok=True)
    link = shop / "evil"
    if not link.is_symlink():
        link.symlink_to(target, target_is_directory=True)
    before = snapshot(comfy.loras)
    assert_node_error(lambda: comfy.N["ChopShopSaveLoRA"].execute(lora, "evil/x"), "symbolic link")
    assert_node_error(lambda: comfy.N["ChopShopSaveLoRA"].execute(lora, "evil/deeper/x"), "symbolic link")
    assert os.listdir(target) == []
    assert snapshot(comfy.loras) == before


@pytest.mark.parametrize("prefix", ["/abs/x", "../x", "a/../../x", "", "   ", "a//b", "bad\x1b[2J", "C:/x",
                                    "a/./b", "x\\..\\y"])
def test_save_refuses_bad_prefixes(comfy, prefix):
    lora = comfy.N["ChopShopFromLoraModel"].execute(hostile.good_sd()).args[0]
    before = snapshot(comfy.loras)
    assert_node_error(lambda: comfy.N["ChopShopSaveLoRA"].execute(lora, prefix), "filename_prefix")
    assert snapshot(comfy.loras) == before


def test_a_good_save_still_works_and_holds_no_nan(comfy):
    lora = comfy.N["ChopShopFromLoraModel"].execute(hostile.good_sd()).args[0]
    rel = comfy.N["ChopShopSaveLoRA"].execute(lora, "hostile_ok/ok").args[0]
    from safetensors.torch import load_file
    sd = load_file(str(comfy.loras / rel))
    assert all(torch.isfinite(t.float()).all() for t in sd.values())
    assert not [f for f in os.listdir(comfy.loras / "chopshop" / "hostile_ok") if f.endswith(".tmp")]


def test_hostile_files_are_node_errors_in_a_real_server(tmp_path):
    """The same refusals reach the UI as node errors (execution_error) from a running ComfyUI server, which
    keeps serving; nothing is written under the loras folder."""
    from chopshop_dev.comfy_runtime import ComfyServer, make_base_dir
    base = make_base_dir(tmp_path / "srv")
    loras = base / "models" / "loras"
    (loras / "overlap.safetensors").write_bytes(hostile.CONTAINERS["offsets_overlap"])
    hostile.write_sd(loras / "nan.safetensors", hostile.MODULES["nan_up"][0])
    (loras / "escape.safetensors").symlink_to(hostile.write_sd(tmp_path / "outside.safetensors", hostile.good_sd()))
    before = snapshot(loras)
    cases = [("overlap.safetensors", "ChopShopLoadLoRA", "overlaps"),
             ("escape.safetensors", "ChopShopLoadLoRA", "outside the loras folders"),
             ("nan.safetensors", "ChopShopSaveLoRA", hostile.OUT)]
    with ComfyServer(base) as srv:
        for name, node, words in cases:
            status, body = srv.post_prompt({
                "1": {"class_type": "ChopShopLoadLoRA", "inputs": {"lora_name": name}},
                "2": {"class_type": "ChopShopSaveLoRA", "inputs": {"lora": ["1", 0], "filename_prefix": "h"}}})
            if status == 400:      # a core that list-checks combo values refuses the name before running
                assert node == "ChopShopLoadLoRA" and "1" in body["node_errors"], body
                continue
            entry = srv.wait_history(body["prompt_id"], timeout=300)
            err = next(d for kind, d in entry["status"]["messages"] if kind == "execution_error")
            assert err["node_type"] == node, err
            assert words in err["exception_message"] and "\n" not in err["exception_message"].strip()
        assert srv.get("/system_stats")["system"]["comfyui_version"] == "0.3.75"
    assert snapshot(loras) == before
