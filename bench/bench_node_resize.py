#!/usr/bin/env python3
"""SVD Resize through the ComfyUI node vs the core (CLI) path, on the same SDXL-sized LoRA and device (CPU).

    make bench   # or: PYTHONPATH=. .runtime/venv/bin/python bench/bench_node_resize.py [--rule sv_fro --value 0.9]

The LoRA is chopshop_dev/synth.sdxl_lycoris_full(te="all", rank=32, conv_rank=32) (SDXL LyCORIS LoCon, every UNet
block layer + every CLIP-L/CLIP-G attention and MLP layer), written once to bench/out/. ComfyUI 0.3.75 is
loaded in-process with this checkout as a custom node pack; the node's execute() (ProgressBar, cancel check,
device from comfy.model_management, soft_empty_cache) is timed against core.resize.resize() on a LoraFile
read from the file (what `python -m core resize` runs), both after imports, best of --repeat runs each,
alternating. The ratio node/CLI must stay within 1.5x.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
LORA = "bench_sdxl_lycoris_r32.safetensors"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", default="sv_fro")
    ap.add_argument("--value", type=float, default=0.9)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args(argv)
    from chopshop_dev.comfy_runtime import load_comfy_inprocess, make_base_dir, runtime_present
    if not runtime_present():
        print("no ComfyUI runtime: run `make runtime`")
        return 2
    from chopshop_dev import synth
    path = OUT / LORA
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        synth.write(path, synth.sdxl_lycoris_full(te="all", rank=32, conv_rank=32), dict(synth.SEED_META))
    base = make_base_dir(tempfile.mkdtemp(prefix="chopshop_bench_"))
    (base / "models" / "loras" / LORA).symlink_to(path)
    ns = load_comfy_inprocess(base, with_nodes=True)
    N = ns.nodes.NODE_CLASS_MAPPINGS
    import torch
    from core.lora_file import read
    from core.resize import Rule, resize

    lora = N["ChopShopLoadLoRA"].execute(LORA).args[0]
    node = N["ChopShopSVDResize"]
    value = int(a.value) if a.rule == "rank" else a.value
    dev = ns.model_management.get_torch_device()
    print(f"LoRA: {path.name} ({path.stat().st_size / 2 ** 20:.1f} MiB, {len(lora.modules)} modules, "
          f"{lora.architecture}); rule {a.rule}={value}; device {dev}; torch threads {torch.get_num_threads()}")
    t_node, t_cli = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        out_node, report_node = node.execute(lora, a.rule, a.value, 0, "fp16").args
        t_node.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        out_cli, rep = resize(read(path), Rule(a.rule, value), dtype="fp16", device=dev)
        t_cli.append(time.perf_counter() - t0)
    same = sorted(out_node.store.keys()) == sorted(out_cli.store.keys()) and all(
        torch.equal(out_node.store.tensor(k), out_cli.store.tensor(k)) for k in out_cli.store.keys())
    ratio = min(t_node) / min(t_cli)
    print(f"node execute : best {min(t_node):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_node)})")
    print(f"core resize  : best {min(t_cli):.2f} s  (runs: {', '.join(f'{t:.2f}' for t in t_cli)})")
    print(f"ratio node/CLI: {ratio:.2f}x  (limit 1.5x) -> {'OK' if ratio <= 1.5 else 'TOO SLOW'}; "
          f"outputs identical: {same}")
    return 0 if ratio <= 1.5 and same else 1


if __name__ == "__main__":
    sys.exit(main())
