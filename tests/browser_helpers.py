"""Helpers for the browser tests: the real ComfyUI UI in headless Debian chromium, driven by playwright.

    with open_ui(server.url, vue_nodes=False) as ui:     # ui.page, ui.logs
        ui.load_workflow(workflow_dict)
        ui.shot("name")                                  # test-artifacts/<name>.png, 1400x800

Never runs ``playwright install``: the browser is /usr/bin/chromium (``make browser``). A fresh profile per
launch; the tutorial/templates dialog and the Nodes 2.0 banner are dismissed before the page loads.
No test functions here.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CHOPSHOP_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = os.environ.get("CHOPSHOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
VIEWPORT = {"width": 1400, "height": 800}
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
        "--disable-dev-shm-usage"]
NOISE = ("user.css", "userdata?dir=workflows", "subgraphs", "templates", "api.comfy.org",
         "ERR_NAME_NOT_RESOLVED", "favicon")


def post_setting(url: str, key: str, value) -> None:
    """A server-side user setting (user/default/comfy.settings.json), as the settings dialog writes it."""
    req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


class UI:
    def __init__(self, page, logs):
        self.page = page
        self.logs = logs

    # -------------------------------------------------------------- page state
    def wait_ready(self, node_type: str = "ChopShopBlockChop", timeout_ms: int = 120_000):
        self.page.wait_for_function(
            "(t) => window.app && window.app.graph && window.LiteGraph "
            "&& window.LiteGraph.registered_node_types[t] && window.__chopshopBlockGrid",
            arg=node_type, timeout=timeout_ms)

    def load_workflow(self, workflow: dict, scale: float = 1.0, offset=(10, 10)):
        """app.loadGraphData(workflow), then a fixed view (scale, offset) for comparable screenshots."""
        self.page.evaluate(
            """async ([wf, scale, offset]) => {
                 await window.app.loadGraphData(wf, true, true, null);
                 window.app.canvas.ds.scale = scale;
                 window.app.canvas.ds.offset = offset;
                 window.app.graph.setDirtyCanvas(true, true);
               }""", [workflow, scale, list(offset)])

    def node_id(self, comfy_class: str) -> int:
        return self.page.evaluate(
            "(c) => (window.app.graph.nodes ?? window.app.graph._nodes).find(n => (n.comfyClass ?? n.type) === c)?.id",
            comfy_class)

    def widget_value(self, node_id: int, name: str):
        return self.page.evaluate(
            "([id, name]) => window.app.graph.getNodeById(id)?.widgets?.find(w => w.name === name)?.value",
            [node_id, name])

    def set_widget(self, node_id: int, name: str, value):
        """Set a widget by name and fire its callback (like a user edit)."""
        self.page.evaluate(
            """([id, name, value]) => {
                 const n = window.app.graph.getNodeById(id);
                 const w = n.widgets.find(w => w.name === name);
                 w.value = value;
                 w.callback?.(w.value, window.app.canvas, n);
                 window.app.graph.setDirtyCanvas(true, true);
               }""", [node_id, name, value])

    def grid(self, node_id: int):
        """The Block Chop grid as the DOM shows it: {cells: [{label, present, state, weight}], message, ...}."""
        return self.page.evaluate(
            """(id) => {
                 const root = document.querySelector(`.chopshop-grid[data-node-id="${id}"]`);
                 if (!root) return null;
                 const msg = root.querySelector('[data-role=message]');
                 const r = root.getBoundingClientRect();
                 return {
                   cells: [...root.querySelectorAll('.chopshop-cell')].map(c => ({
                     label: c.dataset.label, present: c.dataset.present === '1', state: c.dataset.state,
                     weight: c.dataset.weight})),
                   message: msg?.textContent ?? '', message_state: msg?.dataset.state ?? '',
                   message_color: msg ? getComputedStyle(msg).color : '',
                   note: root.querySelector('[data-role=note]')?.textContent ?? '',
                   source: root.querySelector('.chopshop-src')?.textContent ?? '',
                   visible: r.width > 0 && r.height > 0, width: r.width, height: r.height,
                   font_px: parseFloat(getComputedStyle(root.querySelector('.cs-lab') ?? root).fontSize),
                 };
               }""", node_id)

    def wait_grid(self, node_id: int, predicate_js: str, timeout_ms: int = 15_000):
        """Wait until ``predicate_js`` (a JS expression over ``g``, the grid() dict) holds."""
        self.page.wait_for_function(
            """([id, body]) => {
                 const root = document.querySelector(`.chopshop-grid[data-node-id="${id}"]`);
                 if (!root) return false;
                 const g = {
                   cells: [...root.querySelectorAll('.chopshop-cell')].map(c => ({
                     label: c.dataset.label, present: c.dataset.present === '1', state: c.dataset.state,
                     weight: c.dataset.weight})),
                   message: root.querySelector('[data-role=message]')?.textContent ?? '',
                   message_state: root.querySelector('[data-role=message]')?.dataset.state ?? '',
                   note: root.querySelector('[data-role=note]')?.textContent ?? '',
                   source: root.querySelector('.chopshop-src')?.textContent ?? '',
                 };
                 return Function('g', 'return (' + body + ')')(g);
               }""", arg=[node_id, predicate_js], timeout=timeout_ms)

    def click_cell(self, node_id: int, label: str):
        self.page.locator(f'.chopshop-grid[data-node-id="{node_id}"] .chopshop-cell[data-label="{label}"]').click()

    def node_boxes(self):
        """{id: {title, x, y, w, h}} of every node in graph units, title bar included: the Vue node's DOM box
        under Nodes 2.0, else the LiteGraph node's pos/size (+ title height) on the classic canvas."""
        return self.page.evaluate(
            """() => {
                 const app = window.app, g = app.graph, ds = app.canvas.ds;
                 const nodes = g.nodes ?? g._nodes;
                 const vue = !!app.extensionManager?.setting?.get?.('Comfy.VueNodes.Enabled');
                 const canvasRect = app.canvas.canvas.getBoundingClientRect();
                 const titleH = window.LiteGraph.NODE_TITLE_HEIGHT ?? 30;
                 const out = {};
                 for (const n of nodes) {
                   let box = null;
                   const el = vue ? document.querySelector(`.lg-node[data-node-id="${n.id}"]`) : null;
                   if (el) {
                     const r = el.getBoundingClientRect();
                     box = {x: (r.left - canvasRect.left) / ds.scale - ds.offset[0],
                            y: (r.top - canvasRect.top) / ds.scale - ds.offset[1],
                            w: r.width / ds.scale, h: r.height / ds.scale, dom: true};
                   } else {
                     const collapsed = n.flags?.collapsed;
                     box = {x: n.pos[0], y: n.pos[1] - titleH, w: collapsed ? (n._collapsed_width ?? 80) : n.size[0],
                            h: collapsed ? titleH : n.size[1] + titleH, dom: false};
                   }
                   out[n.id] = {title: n.title ?? n.type, ...box};
                 }
                 return {vue, boxes: out};
               }""")

    def fit_view(self, region=(60, 80, 1390, 735)):
        """Scale and move the canvas so the whole graph fits ``region`` (x0, y0, x1, y1 in page px: the
        canvas right of the side bar, below the tabs); returns the region as a screenshot clip."""
        self.page.evaluate(
            """([rx0, ry0, rx1, ry1]) => {
                 const app = window.app, ds = app.canvas.ds, nodes = app.graph.nodes ?? app.graph._nodes;
                 let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
                 for (const n of nodes) {
                   x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
                   x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
                 }
                 const c = app.canvas.canvas.getBoundingClientRect();
                 const pad = 10, w = rx1 - rx0 - 2 * pad, h = ry1 - ry0 - 2 * pad;
                 const s = Math.min(w / (x1 - x0), h / (y1 - y0));
                 ds.scale = s;
                 ds.offset = [(rx0 + pad - c.left + (w - s * (x1 - x0)) / 2) / s - x0,
                              (ry0 + pad - c.top + (h - s * (y1 - y0)) / 2) / s - y0];
                 app.graph.setDirtyCanvas(true, true);
               }""", list(region))
        x0, y0, x1, y1 = region
        return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}

    def shot(self, name: str, ext: str = "png", **kw) -> Path:
        """A screenshot to ARTIFACTS/<name>.<ext> (png or jpg); kw go to page.screenshot (clip=...)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.{ext}"
        self.page.wait_for_timeout(300)
        if ext == "jpg":
            kw.setdefault("quality", 80)
            kw["type"] = "jpeg"
        self.page.screenshot(path=str(path), **kw)
        return path

    def errors(self):
        """Console errors / page errors that are not known offline noise."""
        return [line for line in self.logs
                if (line.startswith("[pageerror]") or line.startswith("[error]"))
                and not any(n in line for n in NOISE)]


@contextlib.contextmanager
def open_ui(url: str, vue_nodes: bool = False, node_type: str = "ChopShopBlockChop"):
    """Launch chromium on the ComfyUI at ``url`` (Nodes 2.0 on or off) and yield a ready UI."""
    from playwright.sync_api import sync_playwright

    post_setting(url, "Comfy.TutorialCompleted", True)
    post_setting(url, "Comfy.VueNodes.Enabled", bool(vue_nodes))
    post_setting(url, "Comfy.VueNodes.AutoScaleLayout", False)
    post_setting(url, "Comfy.Minimap.Visible", False)     # it would cover the lower right of screenshots
    post_setting(url, "Comfy.Graph.CanvasInfo", False)    # nor the FPS corner
    post_setting(url, "LiteGraph.Canvas.LowQualityRenderingZoomThreshold", 0.2)   # text on zoomed-out shots
    logs: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="chopshop-chromium-") as prof:
        ctx = p.chromium.launch_persistent_context(
            user_data_dir=prof, executable_path=CHROMIUM, headless=True, args=ARGS, viewport=VIEWPORT)
        try:
            ctx.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.on("console", lambda m: logs.append(f"[{m.type}] {m.text}"))
            page.on("pageerror", lambda e: logs.append(f"[pageerror] {e}"))
            page.on("response", lambda r: logs.append(f"[http {r.status}] {r.url}") if r.status >= 400 else None)
            page.goto(url, wait_until="domcontentloaded", timeout=120_000)
            ui = UI(page, logs)
            ui.wait_ready(node_type)
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
            yield ui
        finally:
            ctx.close()
