#!/usr/bin/env python3
"""LoRA Chop Shop demo: a real ComfyUI 0.3.75 (from `make runtime`) runs example_workflows/chop_compare.json.

    make demo                 # or: PYTHONPATH=. .runtime/venv/bin/python scripts/demo.py
    make demo ARGS=--ui       # leave the server running on http://127.0.0.1:8188 (load the workflow from
                              # Workflow > Browse Templates > lora-chopshop > chop_compare)

What it does: builds a ComfyUI base directory under .runtime/demo/ with this checkout linked in as
custom_nodes/lora-chopshop, generates (once, cached under .runtime/cache/) a tiny random-weight
SDXL-family checkpoint and an SDXL LyCORIS LoRA on it, starts the server on 127.0.0.1 and queues the
example workflow with those tiny files in place of sd_xl_base_1.0 and your LoRA, at 64x64 and 2 steps
(chopshop_dev/workflows.py swaps them in): inspect -> Garfield preset -> Block Chop -> SVD Resize sv_fro
0.9 -> four renders with one seed, side by side: none, full, chopped, resized -> Save LoRA of the chopped
one. It prints the inspector table, the chop summary, the resize report (per block), the saved LoRA's name
and how much the renders differ.
"""
import argparse
import io
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chopshop_dev import workflows  # noqa: E402
from chopshop_dev.comfy_runtime import RUNTIME, ComfyServer, make_base_dir, runtime_present  # noqa: E402

WORKFLOW = "chop_compare"
TINY_SIZE, TINY_GAP = 64, 16      # the tiny renders and ImageStitch's spacing in the example
RENDERS = ("none", "full", "chopped", "resized")


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


def node_of(prompt: dict, class_type: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


def sweep_demo(srv, base) -> None:
    """The Block Impact Sweep example on the tiny models (groups mode: 5 renders)."""
    print("\n" + "=" * 30, "Block Impact Sweep (groups, tiny SDXL)", "=" * 30, flush=True)
    info = srv.get("/object_info")
    small = workflows.substitute(workflows.load("block_sweep"), info, workflows.TINY_SDXL_FILES, size=TINY_SIZE,
                                 steps=2, widgets={"mode": "groups"})
    out = srv.run_prompt(workflows.strip_meta(workflows.to_api(small, info)), timeout=1800)["outputs"]
    print(out["6"]["text"][0])
    rec = out["7"]["images"][0]
    print(f"grid: {base / 'output' / rec['subfolder'] / rec['filename']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ui", action="store_true", help="leave the server running on 127.0.0.1:PORT afterwards")
    ap.add_argument("--port", type=int, default=None, help="port (default 8188 with --ui, else a free one)")
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
        small = workflows.substitute(workflows.load(WORKFLOW), info, workflows.TINY_SDXL_FILES, size=TINY_SIZE,
                                     steps=2, cfg=1.0)
        prompt = workflows.strip_meta(workflows.to_api(small, info))
        t1 = time.monotonic()
        print(f"running example_workflows/{WORKFLOW}.json with the tiny models (CPU; about a minute) ...", flush=True)
        entry = srv.run_prompt(prompt, timeout=1800)
        print(f"  done in {time.monotonic() - t1:.1f} s\n")
        out = entry["outputs"]
        print("=" * 30, "Block Layout Inspector", "=" * 30)
        print(out[node_of(prompt, "ChopShopBlockLayoutInspector")]["text"][0])
        print("\n" + "=" * 30, "Block Chop (Garfield)", "=" * 30)
        print(out[node_of(prompt, "ChopShopBlockChop")]["text"][0])
        print("\n" + "=" * 30, "SVD Resize (sv_fro 0.9)", "=" * 30)
        print(resize_summary(out[node_of(prompt, "ChopShopSVDResize")]["text"][0]))
        print("\n" + "=" * 30, "Save LoRA", "=" * 30)
        saved = out[node_of(prompt, "ChopShopSaveLoRA")]["text"][0]
        print(f"saved: models/loras/{saved}  ({base / 'models' / 'loras' / saved})")
        listed = srv.get("/object_info/LoraLoader")["LoraLoader"]["input"]["required"]["lora_name"][0]
        print(f"listed by the stock LoraLoader: {saved in listed}")
        rec = out[node_of(prompt, "SaveImage")]["images"][0]
        row = _pixels(srv.get_bytes(f"/view?filename={rec['filename']}&subfolder={rec['subfolder']}&type=output"))
        print(f"renders side by side ({' | '.join(RENDERS)}): {base / 'output' / rec['subfolder'] / rec['filename']}")
        imgs = {n: row[:, i * (TINY_SIZE + TINY_GAP): i * (TINY_SIZE + TINY_GAP) + TINY_SIZE]
                for i, n in enumerate(RENDERS)}
        for x, y in (("none", "full"), ("full", "chopped"), ("full", "resized"), ("chopped", "resized")):
            d = abs(imgs[x] - imgs[y])
            print(f"mean |{x} - {y}| = {d.mean():.2f} / 255  ({100 * (d.max(axis=2) > 0).mean():.1f}% of pixels differ)")
        sweep_demo(srv, base)
        ok = True
    finally:
        if a.ui and ok:
            print(f"\nComfyUI is running: {srv.url}  (PID {srv.proc.pid}; stop it with: kill {srv.proc.pid})")
            print("Load the workflow from Workflow > Browse Templates (lora-chopshop: chop_compare), or drag "
                  f"{workflows.EXAMPLES / (WORKFLOW + '.json')} onto the canvas; pick tiny_sdxl.safetensors and "
                  "tiny_sdxl_locon.safetensors in its loaders.")
        else:
            srv.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
