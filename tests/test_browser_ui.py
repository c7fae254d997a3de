"""The web UI in a real browser: ComfyUI 0.3.75 + this pack, headless Debian chromium via playwright.

Runs against the frontend ComfyUI pins (1.32.9) or, with CHOPSHOP_FRONTEND_ROOT set (make test-browser does
both), against another build such as the newest comfyui-frontend-package (ComfyServer passes it as
--front-end-root).

The example workflows stay tidy (test_example_workflow_stays_tidy, test_flux_example_loads_tidy): no two
nodes' boxes overlap and none is taller than 1,200 px, before and after a run, classic canvas and Nodes
2.0. Those tests also take the template thumbnails and the README screenshots; with
CHOPSHOP_UPDATE_SHOTS=1 they are written over example_workflows/<name>.jpg and docs/screenshots/.

Covers web/chopshop_blockgrid.js (Block Chop grid, Preset Picker line, validation before queueing),
web/chopshop_inspector.js (block table after execution) and web/chopshop_reports.js (saved path on
Save LoRA), under the classic canvas and under Nodes 2.0 (Comfy.VueNodes.Enabled).

The example workflow example_workflows/chop_compare.json is loaded as a user would (app.loadGraphData),
with the tiny models swapped in (chopshop_dev/workflows.py), and queued from the UI (app.queuePrompt).
The grid tests mute its render chain (mode NEVER) to stay quick; the tidy test runs all of it.

Screenshots (1400x800) go to test-artifacts/browser_*.png. Set CHOPSHOP_BROWSER_URL to run against an
already running server that has the tiny SDXL fixtures (development only).
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from chopshop_dev import synth
from browser_helpers import ARTIFACTS, open_ui
from chopshop_dev import workflows
from chopshop_dev.comfy_runtime import ComfyServer, make_base_dir

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "example_workflows" / "chop_compare.json"
LORA = "tiny_sdxl_locon.safetensors"
SDXL = ["INP01", "INP02", "INP03", "INP04", "INP05", "INP06", "INP07", "INP08", "MID00", "MID01", "MID02",
        "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08"]
GARFIELD_ON = ["OUT00", "OUT01", "OUT04", "OUT05"]
GARFIELD = "Garfield (Character+Style)"
# nodes the chop part does not need: rendering only (muted so the suite stays well under 3 minutes)
RENDER_TYPES = {"CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "ChopShopApplyLoRA", "KSampler",
                "VAEDecode", "SaveImage", "ChopShopSVDResize", "ImageStitch", "PrimitiveStringMultiline"}
MAX_NODE_H = 1200
UPDATE_SHOTS = os.environ.get("CHOPSHOP_UPDATE_SHOTS") == "1"
SHOTS = REPO / "docs" / "screenshots"
FRONTEND = "newest" if os.environ.get("CHOPSHOP_FRONTEND_ROOT") else "pinned"
ERROR_RED = "rgb(255, 138, 128)"


class Server:
    def __init__(self, url, base=None):
        self.url = url
        self.base = base

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def free(self):
        """Drop cached outputs: the next prompt executes (and reports) every node again."""
        req = urllib.request.Request(self.url + "/free", data=b'{"unload_models": true, "free_memory": true}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()
        time.sleep(1)

    def validate(self, vector, lora=LORA):
        q = urllib.parse.urlencode({"vector": vector, "lora": lora})
        return self.get(f"/chopshop/validate?{q}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = os.environ.get("CHOPSHOP_BROWSER_URL")
    if url:
        req = urllib.request.Request(url.rstrip("/") + "/free", data=b'{"free_memory": true}',
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()    # drop cached outputs: every node executes again
        time.sleep(1)
        yield Server(url.rstrip("/"))
        return
    from chopshop_dev.tiny_sdxl import ensure_tiny_sdxl, ensure_tiny_sdxl_lora
    base = make_base_dir(tmp_path_factory.mktemp("browser_base"))
    ensure_tiny_sdxl(base / "models")        # the workflow's checkpoint combo must list it
    ensure_tiny_sdxl_lora(base / "models")
    flux = synth.make_style("kohya", "flux", rank=4, seed=3)     # the Flux example's LoRA part (no tiny Flux model)
    synth.write(base / "models" / "loras" / workflows.TINY_FLUX_FILES["your_flux_lora.safetensors"], flux.sd)
    with ComfyServer(base) as srv:
        yield Server(srv.url, base)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def tiny(name, object_info):
    files = {**workflows.TINY_SDXL_FILES, **workflows.TINY_FLUX_FILES}
    return workflows.substitute(workflows.load(name), object_info, files, size=64, steps=2, cfg=1.0)


@pytest.fixture(scope="module")
def workflow(object_info):
    return tiny("chop_compare", object_info)


def expected_vector(on, labels=SDXL):
    return ",".join(["1", *("1" if lab in on else "0" for lab in labels)])


# A compact arrangement of the chop nodes for the 1400x800 screenshots (graph coordinates; sizes are
# minimums, the widgets grow the nodes under the classic canvas). The render chain moves out of view.
LAYOUT = {
    "ChopShopLoadLoRA": ([0, 0], None),
    "ChopShopPresetPicker": ([0, 120], [340, 190]),
    "ChopShopSVDResize": ([0, 420], None),
    "ChopShopBlockChop": ([360, 0], [480, 300]),
    "ChopShopSaveLoRA": ([360, 500], None),
    "ChopShopBlockLayoutInspector": ([858, 0], [460, 200]),
}
VIEW_OFFSET = (75, 55)


def arranged(workflow):
    wf = json.loads(json.dumps(workflow))
    for n in wf["nodes"]:
        if n["type"] in LAYOUT:
            pos, size = LAYOUT[n["type"]]
            n["pos"] = pos
            if size:
                n["size"] = size
        else:
            n["pos"] = [n["pos"][0] + 1600, n["pos"][1]]
    return wf


def prepare(ui, workflow):
    """Load the example workflow (chop nodes arranged for the screenshots), mute the render chain,
    return the ids of our nodes."""
    ui.load_workflow(arranged(workflow), scale=1.0, offset=VIEW_OFFSET)
    ids = ui.page.evaluate(
        """(renderTypes) => {
             const nodes = window.app.graph.nodes ?? window.app.graph._nodes;
             for (const n of nodes) if (renderTypes.includes(n.comfyClass ?? n.type)) n.mode = 2;   // NEVER
             window.app.graph.setDirtyCanvas(true, true);
             const id = (c) => nodes.find(n => (n.comfyClass ?? n.type) === c)?.id;
             return {load: id('ChopShopLoadLoRA'), inspector: id('ChopShopBlockLayoutInspector'),
                     picker: id('ChopShopPresetPicker'), chop: id('ChopShopBlockChop'),
                     save: id('ChopShopSaveLoRA')};
           }""", sorted(RENDER_TYPES))
    assert all(ids.values()), ids
    return ids


def on_cells(grid):
    return [c["label"] for c in grid["cells"] if c["present"] and c["state"] in ("on", "frac")]


def pick_preset(ui, ids, name, on):
    ui.set_widget(ids["picker"], "preset", name)
    ui.wait_grid(ids["chop"], "g.cells.filter(c => c.present && c.state === 'on').map(c => c.label).join() === "
                 + json.dumps(",".join(on)))


def assert_grid_matches_vector(grid, vector):
    """Every present cell's weight equals the vector's number at that block's position."""
    nums = vector.split(",")
    present = [c for c in grid["cells"] if c["present"]]
    assert len(nums) == len(present) + 1, (vector, [c["label"] for c in present])
    for c, v in zip(present, nums[1:]):
        assert float(c["weight"]) == float(v), (c, v, vector)


def queue_and_wait(ui, server, timeout=120):
    """Queue from the UI like the Run button; return the new /history entry once it finished."""
    before = set(server.get("/history?max_items=200"))
    ui.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hist = server.get("/history?max_items=200")
        new = [k for k in hist if k not in before]
        for k in new:
            st = hist[k].get("status") or {}
            if st.get("completed") or st.get("status_str") == "error":
                return hist[k]
        time.sleep(0.25)
    raise AssertionError(f"no finished prompt within {timeout} s; console: {ui.logs[-20:]}")


def test_block_grid_preset_validation_and_queue_classic(server, workflow):
    with open_ui(server.url, vue_nodes=False) as ui:
        ids = prepare(ui, workflow)
        chop = ids["chop"]
        ui.wait_grid(chop, "g.cells.length === 20 && g.source.includes('tiny_sdxl_locon')")

        # 1. preset sync: Picker -> Block Chop grid + vector widget, applied by label
        pick_preset(ui, ids, "Heavy Lifter", ["OUT01"])
        pick_preset(ui, ids, GARFIELD, GARFIELD_ON)
        ui.page.wait_for_function(
            "([id, v]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'vector').value === v",
            arg=[chop, expected_vector(GARFIELD_ON)], timeout=10_000)
        g = ui.grid(chop)
        assert [c["label"] for c in g["cells"]] == SDXL
        assert on_cells(g) == GARFIELD_ON
        vec = ui.widget_value(chop, "vector")
        assert vec == expected_vector(GARFIELD_ON)
        assert_grid_matches_vector(g, vec)
        assert GARFIELD in g["note"]
        ui.wait_grid(chop, "g.message_state === 'ok'")
        picker_line = ui.page.locator(".chopshop-preset [data-role=preset-vector]").first
        assert picker_line.get_attribute("data-vector") == vec          # the Picker shows the same vector
        # legible at the default zoom
        assert g["visible"] and g["font_px"] >= 11
        ui.shot("browser_classic_garfield")

        # 2. queue from the UI (render chain muted): saved path on Save LoRA, table on the Inspector
        entry = queue_and_wait(ui, server)
        assert entry["status"]["status_str"] == "success", entry["status"]
        saved = entry["outputs"][str(ids["save"])]["text"][0]
        assert re.fullmatch(r"chopshop/garfield_\d{5}\.safetensors", saved), saved
        if server.base:
            assert (server.base / "models" / "loras" / saved).is_file()
        ui.page.wait_for_function(
            "(p) => [...document.querySelectorAll('[data-role=saved-path]')].some(e => e.dataset.value === p)",
            arg=saved, timeout=15_000)
        kept = ui.page.locator(f'.chopshop-grid[data-node-id="{chop}"] [data-role=last-run]')
        kept.wait_for(state="visible", timeout=10_000)
        assert kept.get_attribute("data-kept") == ",".join(GARFIELD_ON)     # what ran is what the grid showed
        rows = ui.page.locator(".chopshop-layout [data-role=layout-table] tbody tr")
        rows.first.wait_for(timeout=15_000)
        assert rows.count() == 20
        assert [rows.nth(i).get_attribute("data-label") for i in range(rows.count())] == SDXL
        shares = ui.page.locator(".chopshop-layout .cs-bar em").all_text_contents()
        assert len(shares) == 20 and all(s.endswith("%") for s in shares)
        assert abs(sum(float(s[:-1]) for s in shares) - 100) < 1.0
        ui.page.wait_for_timeout(500)
        ui.shot("browser_classic_executed")

        # 3. toggling a block rewrites the vector (and detaches the Picker, whose vector would win)
        ui.click_cell(chop, "OUT02")
        toggled = expected_vector(GARFIELD_ON + ["OUT02"])
        ui.page.wait_for_function(
            "([id, v]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'vector').value === v",
            arg=[chop, toggled], timeout=5_000)
        g = ui.grid(chop)
        assert on_cells(g) == ["OUT00", "OUT01", "OUT02", "OUT04", "OUT05"]
        assert "detached" in g["note"]
        links = ui.page.evaluate(
            "(id) => Object.fromEntries(window.app.graph.getNodeById(id).inputs.map(i => [i.name, i.link]))", chop)
        assert links["vector"] is None and links["lora"] is not None
        # a fractional weight typed into a cell (right-click)
        cell = ui.page.locator(f'.chopshop-grid[data-node-id="{chop}"] .chopshop-cell[data-label="OUT03"]')
        cell.click(button="right")
        cell.locator("input").fill("0.5")
        cell.locator("input").press("Enter")
        frac = toggled.split(",")
        frac[1 + SDXL.index("OUT03")] = "0.5"
        assert ui.widget_value(chop, "vector") == ",".join(frac)
        ui.wait_grid(chop, "g.cells.find(c => c.label === 'OUT03').state === 'frac' && g.message_state === 'ok'")
        # editing the vector widget redraws the grid
        ui.set_widget(chop, "vector", expected_vector(["INP04", "MID01"]))
        ui.wait_grid(chop, "g.cells.filter(c => c.state === 'on').map(c => c.label).join() === 'INP04,MID01'")
        ui.shot("browser_classic_toggled")

        # 4. a malformed vector: the backend's own message, in red, before anything is queued
        for bad in ["1,0,zero", "1,0,1", "1,,0"]:
            ui.set_widget(chop, "vector", bad)
            want = server.validate(bad)
            assert want["ok"] is False and want["error"]
            ui.wait_grid(chop, "g.message_state === 'error' && g.message.includes(" + json.dumps(want["error"]) + ")")
            g = ui.grid(chop)
            assert g["message"] == "⚠ " + want["error"]
            assert g["message_color"] == ERROR_RED
        ui.shot("browser_classic_error")
        # ... and it is the error the run would stop with
        entry = queue_and_wait(ui, server)
        assert entry["status"]["status_str"] == "error"
        errs = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
        assert errs and server.validate("1,,0")["error"] in errs[0]["exception_message"]

        assert not [e for e in ui.errors() if "chopshop" in e.lower()], ui.errors()


def test_block_grid_without_lora_uses_architecture_layout(server):
    with open_ui(server.url, vue_nodes=False) as ui:
        chop = ui.page.evaluate(
            """() => {
                 window.app.graph.clear();
                 const n = window.LiteGraph.createNode('ChopShopBlockChop');
                 n.pos = [60, 60];
                 window.app.graph.add(n);
                 window.app.canvas.ds.offset = [0, 0]; window.app.canvas.ds.scale = 1;
                 return n.id;
               }""")
        ui.wait_grid(chop, "g.cells.length === 20 && g.message_state === 'ok'")
        assert ui.widget_value(chop, "vector") == expected_vector(SDXL)     # a fresh node: every block on
        sel = ui.page.locator(f'.chopshop-grid[data-node-id="{chop}"] select[data-role=arch]')
        assert "flux" in sel.locator("option").evaluate_all("os => os.map(o => o.value)")
        sel.select_option("flux")
        ui.wait_grid(chop, "g.cells.length === 57 && g.message_state === 'ok'")
        g = ui.grid(chop)
        labels = [c["label"] for c in g["cells"]]
        assert labels[0] == "D00" and labels[18] == "D18" and labels[19] == "S00" and labels[-1] == "S37"
        assert ui.widget_value(chop, "vector") == ",".join(["1"] * 58)
        ui.click_cell(chop, "S05")
        vec = ui.widget_value(chop, "vector").split(",")
        assert vec[1 + labels.index("S05")] == "0" and vec.count("0") == 1
        sections = ui.page.locator(f'.chopshop-grid[data-node-id="{chop}"] .chopshop-group').evaluate_all(
            "gs => gs.map(g => g.dataset.section)")
        assert sections == ["D", "S"]
        ui.shot("browser_classic_flux_layout")


def test_block_grid_under_nodes_2_0(server, workflow):
    with open_ui(server.url, vue_nodes=True) as ui:
        ids = prepare(ui, workflow)
        chop = ids["chop"]
        assert ui.page.evaluate("() => window.app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") is True
        ui.wait_grid(chop, "g.cells.length === 20 && g.source.includes('tiny_sdxl_locon')")
        pick_preset(ui, ids, "Heavy Lifter", ["OUT01"])
        pick_preset(ui, ids, GARFIELD, GARFIELD_ON)
        ui.page.wait_for_function(
            "([id, v]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'vector').value === v",
            arg=[chop, expected_vector(GARFIELD_ON)], timeout=10_000)
        g = ui.grid(chop)
        assert on_cells(g) == GARFIELD_ON
        assert_grid_matches_vector(g, ui.widget_value(chop, "vector"))
        # the grid is rendered inside the Vue node (not on the canvas) and fits its width
        fit = ui.page.evaluate(
            """(id) => {
                 const grid = document.querySelector(`.chopshop-grid[data-node-id="${id}"]`);
                 const node = grid.closest('.lg-node');
                 if (!node) return null;
                 const a = grid.getBoundingClientRect(), b = node.getBoundingClientRect();
                 return {inside: a.left >= b.left - 1 && a.right <= b.right + 1, w: a.width};
               }""", chop)
        assert fit and fit["inside"], fit
        assert g["font_px"] >= 11
        ui.page.wait_for_timeout(300)
        ui.shot("browser_vue_garfield")

        # widgets added on execution show up in Vue nodes too (saved path, block table)
        entry = queue_and_wait(ui, server)
        assert entry["status"]["status_str"] == "success", entry["status"]
        saved = entry["outputs"][str(ids["save"])]["text"][0]
        ui.page.wait_for_function(
            "(p) => [...document.querySelectorAll('.lg-node [data-role=saved-path]')].some(e => e.dataset.value === p)",
            arg=saved, timeout=15_000)
        rows = ui.page.locator(".lg-node .chopshop-layout [data-role=layout-table] tbody tr")
        rows.first.wait_for(timeout=15_000)
        assert rows.count() == 20
        ui.page.wait_for_timeout(500)
        ui.shot("browser_vue_executed")

        ui.click_cell(chop, "OUT04")
        ui.page.wait_for_function(
            "([id, v]) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'vector').value === v",
            arg=[chop, expected_vector(["OUT00", "OUT01", "OUT05"])], timeout=5_000)
        # typing into the Vue text field of `vector` (now unlinked) redraws the grid / shows the error
        field = ui.page.locator(f'.lg-node[data-node-id="{chop}"] input[aria-label="vector"]')
        field.fill(expected_vector(["INP07", "OUT08"]))
        field.press("Tab")
        ui.wait_grid(chop, "g.cells.filter(c => c.state === 'on').map(c => c.label).join() === 'INP07,OUT08'")
        bad = "1,0,zero"
        field.fill(bad)
        field.press("Tab")
        want = server.validate(bad)["error"]
        ui.wait_grid(chop, "g.message_state === 'error' && g.message.includes(" + json.dumps(want) + ")")
        assert ui.widget_value(chop, "vector") == bad
        assert ui.grid(chop)["message_color"] == ERROR_RED
        ui.shot("browser_vue_error")
        assert not [e for e in ui.errors() if "chopshop" in e.lower()], ui.errors()


# ------------------------------------------------------------------------------------------- tidy layout
def overlaps(boxes, tol=1.0):
    """Pairs of nodes whose boxes intersect (by more than tol px both ways)."""
    items = list(boxes.items())
    out = []
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            dx = min(ra["x"] + ra["w"], rb["x"] + rb["w"]) - max(ra["x"], rb["x"])
            dy = min(ra["y"] + ra["h"], rb["y"] + rb["h"]) - max(ra["y"], rb["y"])
            if dx > tol and dy > tol:
                out.append((ra["title"], rb["title"], round(dx), round(dy)))
    return out


def expected_frontend():
    """The frontend version this run must be served: CHOPSHOP_FRONTEND_VERSION (make test-browser-newest sets
    it), else the runtime's pinned comfyui-frontend-package unless another root was given."""
    if os.environ.get("CHOPSHOP_FRONTEND_VERSION"):
        return os.environ["CHOPSHOP_FRONTEND_VERSION"]
    if FRONTEND == "pinned":
        from importlib.metadata import version
        return version("comfyui-frontend-package")
    return None


def assert_tidy(ui, when, expect_nodes):
    got = ui.node_boxes()
    boxes = got["boxes"]
    assert len(boxes) == expect_nodes, boxes
    if got["vue"]:
        missing = [b["title"] for b in boxes.values() if not b["dom"]]
        assert not missing, f"{when}: no Vue node element for {missing}"
    tall = [(b["title"], round(b["h"])) for b in boxes.values() if b["h"] > MAX_NODE_H]
    assert not tall, f"{when}: nodes taller than {MAX_NODE_H} px: {tall}"
    bad = overlaps(boxes)
    assert not bad, f"{when}: overlapping nodes (a, b, dx, dy): {bad}"
    return boxes


def keep_shot(src: Path, dest: Path):
    """Copy a screenshot into the repository (CHOPSHOP_UPDATE_SHOTS=1): PNGs reduced to 256 colours."""
    if not UPDATE_SHOTS or FRONTEND != "pinned":
        return
    from PIL import Image
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        if dest.suffix == ".png":
            im.convert("RGB").quantize(256).save(dest, optimize=True)
        else:
            im.convert("RGB").save(dest, quality=82, optimize=True)


def show_chop_area(ui):
    """Show the Chop Shop part of the example at 1:1 (loaders, picker, grid, inspector, resize, save) in a
    viewport made big enough for it (DOM widgets of nodes outside the view are hidden)."""
    ui.page.set_viewport_size({"width": 1600, "height": 1200})
    ui.page.wait_for_timeout(500)
    ui.page.evaluate("""() => { const ds = window.app.canvas.ds; ds.scale = 1; ds.offset = [70, 100];
                               window.app.graph.setDirtyCanvas(true, true); }""")
    ui.page.wait_for_timeout(1000)


def template_thumbnail(ui, name: str, vue: bool) -> None:
    """The whole graph fitted in view, shot as the template's thumbnail; the classic view's shot is kept as
    example_workflows/<name>.jpg."""
    clip = ui.fit_view()
    ui.page.wait_for_timeout(800)
    thumb = ui.shot(f"template_{name}_{'nodes2' if vue else 'classic'}", ext="jpg", clip=clip)
    if not vue:
        keep_shot(thumb, workflows.EXAMPLES / f"{name}.jpg")


def chop_area_shot(ui, name):
    return ui.shot(name, clip={"x": 60, "y": 90, "width": 1470, "height": 1050})


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_example_workflow_stays_tidy(server, object_info, vue):
    """The SDXL example, queued from the UI with the tiny models: nothing overlaps, nothing is taller than
    1,200 px, right after loading and after the run; the report boxes scroll inside their nodes."""
    wf = tiny("chop_compare", object_info)
    mode = "nodes2" if vue else "classic"
    with open_ui(server.url, vue_nodes=vue) as ui:
        served = ui.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null")
        want = expected_frontend()
        assert served and (want is None or served == want), (served, want)
        print(f"frontend {served} ({FRONTEND}), {mode}")
        # the template as shipped (real model names this server lacks: the grid shows its error line)
        raw = workflows.load("chop_compare")
        ui.load_workflow(raw, scale=1.0, offset=(20, 50))
        ui.wait_grid(ui.node_id("ChopShopBlockChop"), "g.message_state === 'error'", timeout_ms=30_000)
        ui.page.wait_for_timeout(1000)
        assert_tidy(ui, f"{mode}, the template as shipped", len(raw["nodes"]))
        ui.load_workflow(wf, scale=1.0, offset=(20, 50))
        chop = ui.node_id("ChopShopBlockChop")
        ui.wait_grid(chop, "g.cells.length === 20 && g.message_state === 'ok'", timeout_ms=30_000)
        ui.page.wait_for_timeout(1500)
        assert_tidy(ui, f"{mode}, after loading", len(wf["nodes"]))
        template_thumbnail(ui, "chop_compare", vue)
        ui.page.evaluate("""() => { const ds = window.app.canvas.ds; ds.scale = 1; ds.offset = [20, 50];
                                    window.app.graph.setDirtyCanvas(true, true); }""")

        server.free()        # a cached node reports nothing: run every node, as a user's first run does
        entry = queue_and_wait(ui, server, timeout=900)
        assert entry["status"]["status_str"] == "success", entry["status"]
        show_chop_area(ui)
        resize = ui.node_id("ChopShopSVDResize")
        ui.page.locator(".chopshop-layout [data-role=layout-table] tbody tr").first.wait_for(timeout=30_000)
        ui.page.locator("[data-role=resize-report]").first.wait_for(timeout=30_000)
        ui.page.locator("[data-role=saved-path]").first.wait_for(timeout=30_000)
        ui.page.wait_for_timeout(1500)
        boxes = assert_tidy(ui, f"{mode}, after the run", len(wf["nodes"]))

        # the report box: bounded, scrolls inside the node, per-block summary first
        box = ui.page.evaluate(
            """() => { const t = document.querySelector('[data-role=resize-report]');
                       const sc = t.closest('.chopshop-scroll');
                       return {client: sc.clientHeight, scroll: sc.scrollHeight, first: t.textContent.split('\\n').slice(0, 2),
                               overflow: getComputedStyle(sc).overflowY}; }""")
        assert box["client"] <= 220 and box["scroll"] > box["client"] and box["overflow"] == "auto", box
        assert any(line.startswith("Per block") for line in box["first"]), box["first"]   # after the rule line
        assert boxes[str(resize)]["h"] < 600, boxes[str(resize)]
        # the inspector's table shows every block without scrolling
        table = ui.page.evaluate(
            """() => { const sc = document.querySelector('.chopshop-layout .chopshop-scroll');
                       const rows = [...sc.querySelectorAll('tbody tr')];
                       const r = sc.getBoundingClientRect();
                       return {rows: rows.length, visible: rows.filter(tr => { const b = tr.getBoundingClientRect();
                               return b.top >= r.top - 1 && b.bottom <= r.bottom + 1; }).length,
                               font: parseFloat(getComputedStyle(rows[0]).fontSize)}; }""")
        assert table["rows"] == 20 and table["visible"] == 20 and table["font"] >= 11, table
        assert not [e for e in ui.errors() if "chopshop" in e.lower()], ui.errors()
        shot = chop_area_shot(ui, f"example_after_run_{mode}")
        keep_shot(shot, SHOTS / f"example_after_run_{mode}.png")


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_flux_example_loads_tidy(server, object_info, vue):
    """The Flux example (no tiny Flux model: loaded, not queued; its LoRA part runs in test_nodes_workflow)."""
    wf = tiny("flux_chop_compare", object_info)
    mode = "nodes2" if vue else "classic"
    with open_ui(server.url, vue_nodes=vue) as ui:
        raw = workflows.load("flux_chop_compare")
        ui.load_workflow(raw, scale=1.0, offset=(20, 50))
        ui.wait_grid(ui.node_id("ChopShopBlockChop"), "g.message_state === 'error'", timeout_ms=30_000)
        ui.page.wait_for_timeout(1000)
        assert_tidy(ui, f"flux {mode}, the template as shipped", len(raw["nodes"]))
        ui.load_workflow(wf, scale=1.0, offset=(20, 50))
        chop = ui.node_id("ChopShopBlockChop")
        ui.wait_grid(chop, "g.cells.length === 57 && g.message_state === 'ok'", timeout_ms=30_000)
        ui.page.wait_for_timeout(1500)
        g = ui.grid(chop)
        assert [c["label"] for c in g["cells"] if c["state"] == "on"] == ["D00", "D02", "D10", "D18"], g
        desc = ui.page.locator(f'.chopshop-grid[data-node-id="{chop}"] [data-role=preset-description]')
        assert "double-stream" in desc.text_content()
        assert_tidy(ui, f"flux {mode}, after loading", len(wf["nodes"]))
        template_thumbnail(ui, "flux_chop_compare", vue)


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_block_sweep_example_loads_tidy(server, object_info, vue):
    """The Block Impact Sweep example, as shipped and with the tiny models: nothing overlaps, nothing is
    taller than 1,200 px (it is queued on a real server in test_sweep_workflow)."""
    wf = tiny("block_sweep", object_info)
    mode = "nodes2" if vue else "classic"
    with open_ui(server.url, vue_nodes=vue) as ui:
        raw = workflows.load("block_sweep")
        ui.load_workflow(raw, scale=1.0, offset=(20, 50))
        ui.page.wait_for_timeout(2500)
        assert_tidy(ui, f"sweep {mode}, the template as shipped", len(raw["nodes"]))
        ui.load_workflow(wf, scale=1.0, offset=(20, 50))
        ui.page.wait_for_timeout(2500)
        assert_tidy(ui, f"sweep {mode}, after loading", len(wf["nodes"]))
        assert not [e for e in ui.errors() if "chopshop" in e.lower()], ui.errors()
        template_thumbnail(ui, "block_sweep", vue)


def test_preset_descriptions_in_picker_and_grid_menu(server, object_info):
    """The Picker shows the chosen preset's description under its dropdown; the grid's preset menu carries
    every preset's description as the option's tooltip and shows the chosen one's below the grid."""
    rows = server.get("/chopshop/presets?architecture=sdxl")
    want = {r["name"]: r["description"] for r in rows}
    with open_ui(server.url, vue_nodes=False) as ui:
        ids = prepare(ui, tiny("chop_compare", object_info))
        pick_preset(ui, ids, "Heavy Lifter", ["OUT01"])
        line = ui.page.locator(".chopshop-preset [data-role=preset-description]").first
        ui.page.wait_for_function("(t) => document.querySelector('.chopshop-preset [data-role=preset-description]')"
                                  "?.textContent === t", arg=want["Heavy Lifter"], timeout=10_000)
        assert line.is_visible()
        menu = ui.page.locator(f'.chopshop-grid[data-node-id="{ids["chop"]}"] select[data-role=preset-menu]')
        ui.page.wait_for_function("(n) => document.querySelectorAll("
                                  "'.chopshop-grid select[data-role=preset-menu] option').length === n",
                                  arg=len(rows) + 1, timeout=10_000)
        opts = menu.locator("option").evaluate_all("os => os.map(o => [o.value, o.title])")
        assert {v: t for v, t in opts if v} == {n: d or n for n, d in want.items()}
        menu.select_option("Style")
        ui.wait_grid(ids["chop"], "g.note.includes('detached')")
        desc = ui.page.locator(f'.chopshop-grid[data-node-id="{ids["chop"]}"] [data-role=preset-description]')
        assert desc.text_content() == f"Style: {want['Style']}"
        g = ui.grid(ids["chop"])
        assert on_cells(g) == ["INP04", "INP05", "INP07", "INP08", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"]
        ui.shot("browser_classic_preset_menu")
