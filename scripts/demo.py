#!/usr/bin/env python3
"""LoRA Chop Shop demo: a real ComfyUI 0.3.75 (from `make runtime`) runs example_workflows/chop_compare_api.json.

    make demo                 # or: PYTHONPATH=. .runtime/venv/bin/python scripts/demo.py
    make demo ARGS=--ui       # leave the server running on http://127.0.0.1:8188 (load the workflow from
                              # Workflow > Browse Templates > lora-chopshop > chop_compare)

What it does: builds a ComfyUI base directory under .runtime/demo/ with this checkout linked in as
custom_nodes/lora-chopshop, generates (once, cached under .runtime/cache/) a tiny random-weight
SDXL-family checkpoint and an SDXL LyCORIS LoRA on it, starts the server on 127.0.0.1, queues the API
workflow (inspect -> Garfield preset -> Block Chop -> SVD Resize sv_fro 0.9 -> three renders: unchopped,
chopped, resized -> Save LoRA of the chopped one), waits, and prints the inspector table, the chop summary,
the resize report (per block), the saved LoRA's name and how much the renders differ.

    --export-ui PATH   also write the UI-format twin of the API workflow (node layout for the frontend)
"""
import argparse
import io
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chopshop_dev.comfy_runtime import RUNTIME, ComfyServer, make_base_dir, runtime_present  # noqa: E402

API_WORKFLOW = REPO / "example_workflows" / "chop_compare_api.json"
UI_WORKFLOW = REPO / "example_workflows" / "chop_compare.json"

# node id -> (x, y, width) in the UI twin; columns: loaders | chop shop | renders
LAYOUT = {  # node id -> (x, y, width, height): no overlaps once the widgets (block grid, table) fill them
    "1": (40, 40, 320, 100), "2": (40, 170, 320, 80), "8": (40, 280, 320, 130), "9": (40, 440, 320, 160),
    "4": (400, 40, 340, 190), "6": (400, 260, 340, 200), "7": (400, 490, 340, 110),
    "5": (780, 40, 480, 320), "3": (780, 400, 480, 420),
}
for _i, _row in enumerate((10, 20, 30)):
    _x = 1300 + 330 * _i
    LAYOUT.update({str(_row): (_x, 40, 300, 130), str(_row + 3): (_x, 200, 300, 270),
                   str(_row + 4): (_x, 500, 300, 50), str(_row + 5): (_x, 580, 300, 270)})


def _is_widget(spec) -> bool:
    t, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if isinstance(t, list) or t == "COMBO":
        return True
    return t in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput")


def api_to_ui(api: dict, object_info: dict) -> dict:
    """The LiteGraph (UI) form of an API-format prompt, using /object_info for input order and types."""
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    link_id = 0
    for order, (nid, node) in enumerate(api.items()):
        info = object_info[node["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order_names = info.get("input_order", {})
        names = list(order_names.get("required", [])) + list(order_names.get("optional", []))
        names = names or list(specs)
        inputs, widgets = [], []
        for name in names:
            spec = specs[name]
            val = node["inputs"].get(name)
            linked = isinstance(val, list) and len(val) == 2 and isinstance(val[0], str)
            t = spec[0]
            typ = "COMBO" if isinstance(t, list) else t
            if _is_widget(spec):
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if linked:
                    default = opts.get("default", "" if typ == "STRING" else 0)
                    widgets.append(default)
                else:
                    widgets.append(val if name in node["inputs"] else opts.get("default"))
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                if not linked:
                    continue
            if name not in node["inputs"] and not linked:
                if _is_widget(spec):
                    continue
                inputs.append({"name": name, "type": typ, "link": None})
                continue
            link_id += 1
            src, slot = val
            links.append([link_id, int(src), slot, int(nid), len(inputs), typ])
            out_links.setdefault((src, slot), []).append(link_id)
            entry = {"name": name, "type": typ, "link": link_id}
            if _is_widget(spec):
                entry["widget"] = {"name": name}
            inputs.append(entry)
        x, y, w, h = LAYOUT.get(nid, (40 + 300 * (order % 5), 1100 + 200 * (order // 5), 300, 120))
        nodes.append({"id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [w, h],
                      "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                      "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                                  for i, (n, t) in enumerate(zip(info["output_name"], info["output"]))],
                      "title": node.get("_meta", {}).get("title", info["display_name"]),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    by_id = {n["id"]: n for n in nodes}
    for (src, slot), ids in out_links.items():
        by_id[int(src)]["outputs"][slot]["links"] = ids
    return {"last_node_id": max(by_id), "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def _pixels(png: bytes):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype("int16")


def resize_summary(report: str) -> str:
    lines = report.splitlines()
    modules = [ln for ln in lines[1:] if ln.startswith("  ") and not ln.startswith("   ") and "fro " in ln
               and ("%" in ln) and not ln.strip().split()[0].endswith(":")]
    keep = [ln for ln in lines if ln not in modules]
    return "\n".join(keep[:1] + [f"  ({len(modules)} module lines omitted; see the node's report output)"] + keep[1:])


def sweep_demo(srv, base) -> None:
    """example_workflows/block_sweep_api.json on the tiny models (groups mode: 5 renders)."""
    from fixtures.tiny_sdxl import CKPT_NAME, LORA_NAME
    from sweep_tiny import load_api, tiny_workflow
    print("\n" + "=" * 30, "Block Impact Sweep (groups, tiny SDXL)", "=" * 30, flush=True)
    out = srv.run_prompt(tiny_workflow(load_api(), CKPT_NAME, LORA_NAME, mode="groups"), timeout=1800)["outputs"]
    print(out["6"]["text"][0])
    rec = out["7"]["images"][0]
    print(f"grid: {base / 'output' / rec['subfolder'] / rec['filename']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ui", action="store_true", help="leave the server running on 127.0.0.1:PORT afterwards")
    ap.add_argument("--port", type=int, default=None, help="port (default 8188 with --ui, else a free one)")
    ap.add_argument("--export-ui", metavar="PATH", nargs="?", const=str(UI_WORKFLOW),
                    help=f"write the UI-format workflow (default {UI_WORKFLOW.relative_to(REPO)})")
    a = ap.parse_args(argv)
    if not runtime_present():
        print(f"no ComfyUI runtime at {RUNTIME}: run `make runtime` first", file=sys.stderr)
        return 2
    from chopshop_dev.tiny_sdxl import ensure_tiny_sdxl, ensure_tiny_sdxl_lora

    base = make_base_dir(RUNTIME / "demo")
    t0 = time.monotonic()
    print("fixtures: tiny SDXL checkpoint + LoRA (generated once, then cached; first time ~1 min) ...", flush=True)
    ensure_tiny_sdxl(base / "models")
    ensure_tiny_sdxl_lora(base / "models")
    print(f"  ready in {time.monotonic() - t0:.1f} s under {base}/models", flush=True)

    port = a.port or (8188 if a.ui else None)
    srv = ComfyServer(base, port=port, log_path=base / "comfyui.log")
    print(f"starting ComfyUI on {srv.url} (log {srv.log_path}) ...", flush=True)
    srv.start()
    ok = False
    try:
        print(f"  up in {srv.start_seconds:.1f} s", flush=True)
        info = srv.get("/object_info")
        ours = sorted(k for k, v in info.items() if k.startswith("ChopShop"))
        print("Chop Shop nodes:", ", ".join(ours))
        api = json.loads(API_WORKFLOW.read_text())
        if a.export_ui:
            Path(a.export_ui).write_text(json.dumps(api_to_ui(api, info), indent=1) + "\n")
            print("wrote", a.export_ui)
        prompt = {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in api.items()}
        t1 = time.monotonic()
        print("running example_workflows/chop_compare_api.json (CPU; a minute or two) ...", flush=True)
        entry = srv.run_prompt(prompt, timeout=1800)
        print(f"  done in {time.monotonic() - t1:.1f} s\n")
        out = entry["outputs"]
        print("=" * 30, "Block Layout Inspector", "=" * 30)
        print(out["3"]["text"][0])
        print("\n" + "=" * 30, "Block Chop (Garfield)", "=" * 30)
        print(out["5"]["text"][0])
        print("\n" + "=" * 30, "SVD Resize (sv_fro 0.9)", "=" * 30)
        print(resize_summary(out["6"]["text"][0]))
        print("\n" + "=" * 30, "Save LoRA", "=" * 30)
        saved = out["7"]["text"][0]
        print(f"saved: models/loras/{saved}  ({base / 'models' / 'loras' / saved})")
        listed = srv.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
        print(f"listed by the stock LoraLoader: {saved in listed}")
        imgs = {}
        for nid, name in (("15", "unchopped"), ("25", "chopped"), ("35", "resized")):
            rec = out[nid]["images"][0]
            imgs[name] = _pixels(srv.get_bytes(f"/view?filename={rec['filename']}&subfolder={rec['subfolder']}"
                                               f"&type=output"))
            print(f"render {name:9}: {base / 'output' / rec['subfolder'] / rec['filename']}")
        for x, y in (("unchopped", "chopped"), ("unchopped", "resized"), ("chopped", "resized")):
            d = abs(imgs[x] - imgs[y])
            print(f"mean |{x} - {y}| = {d.mean():.2f} / 255  ({100 * (d.max(axis=2) > 0).mean():.1f}% of pixels differ)")
        sweep_demo(srv, base)
        ok = True
    finally:
        if a.ui and ok:
            print(f"\nComfyUI is running: {srv.url}  (PID {srv.proc.pid}; stop it with: kill {srv.proc.pid})")
            print("Load the workflow from Workflow > Browse Templates (lora-chopshop: chop_compare), or drag "
                  f"{UI_WORKFLOW} onto the canvas.")
        else:
            srv.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
