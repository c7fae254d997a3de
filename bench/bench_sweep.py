#!/usr/bin/env python3
"""Block Impact Sweep wall time against plain KSampler renders of the same settings, in one process.

    .runtime/venv/bin/python bench/bench_sweep.py [--repeats 3] [--steps 20] [--size 64]

ComfyUI 0.3.75 is loaded in-process (tests/comfy_runtime.load_comfy_inprocess, this checkout as a custom node
pack) with the tiny test checkpoints (random weights; text encoders not loaded, the prompts are fixed random
tensors). For each case:

* plain: ``nodes.common_ksampler`` (what KSampler runs) on the model patched with the full LoRA, timed after
  one warm-up render, so no LoRA patching is in it: the strictest baseline.
* plain + patch (``--with-patch``): the same render on a fresh clone each time (the LoRA re-patched, as when a
  block weight is changed by hand between queues).
* sweep: the node's ``execute`` (every render patched, sampled and VAE-decoded, energies, grid and chart).

Runs alternate (plain, sweep) ``--repeats`` times; medians of wall time and of this process's CPU time (all
threads; steadier than wall time on a shared machine) are printed with the ratio sweep / (renders x plain).
Exit status 1 when the wall-time ratio is above 1.15.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

LIMIT = 1.15


def setup(base: Path):
    import torch
    from chopshop_dev.comfy_runtime import load_comfy_inprocess, make_base_dir
    from chopshop_dev.tiny_sd15 import ensure_tiny_checkpoint, ensure_tiny_lora
    from chopshop_dev.tiny_sdxl import ensure_tiny_sdxl, ensure_tiny_sdxl_lora
    make_base_dir(base)
    for ensure in (ensure_tiny_checkpoint, ensure_tiny_lora, ensure_tiny_sdxl, ensure_tiny_sdxl_lora):
        ensure(base / "models")
    ns = load_comfy_inprocess(base, with_nodes=True)
    torch.set_grad_enabled(False)
    return ns


def load_case(ns, ckpt: str, lora_name: str, context: int, pooled: int | None):
    import torch
    N = ns.nodes.NODE_CLASS_MAPPINGS
    path = ns.folder_paths.get_full_path_or_raise("checkpoints", ckpt)
    model, _, vae, _ = ns.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=False)
    lora = N["ChopShopLoadLoRA"].execute(lora_name).args[0]
    gen = torch.Generator().manual_seed(0)

    def cond():
        extra = {"pooled_output": torch.randn(1, pooled, generator=gen)} if pooled else {}
        return [[torch.randn(1, 77, context, generator=gen), extra]]
    return model, vae, lora, cond(), cond()


def timed(fn):
    """(wall seconds, CPU seconds of this process, all threads)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def bench_case(ns, name, case, mode, args):
    import torch
    N = ns.nodes.NODE_CLASS_MAPPINGS
    model, vae, lora, pos, neg = case
    latent = N["EmptyLatentImage"]().generate(args.size, args.size, 1)[0]
    settings = (args.seed, args.steps, args.cfg, "euler", "normal", pos, neg, latent)
    full = N["ChopShopApplyLoRA"].execute(model, lora, 1.0, 0.0).args[0]
    sweep = N["ChopShopBlockSweep"]
    plain, patched, sweeps, renders = [], [], [], None
    with torch.inference_mode():
        for r in range(args.repeats):
            ns.nodes.common_ksampler(full, *settings)                      # warm-up: patches the full LoRA
            plain.append(timed(lambda: ns.nodes.common_ksampler(full, *settings)))
            if args.with_patch:
                fresh = N["ChopShopApplyLoRA"].execute(model, lora, 1.0, 0.0).args[0]
                patched.append(timed(lambda: ns.nodes.common_ksampler(fresh, *settings)))
            out = {}
            sweeps.append(timed(lambda: out.setdefault("o", sweep.execute(
                model, lora, vae, pos, neg, latent, args.seed, args.steps, args.cfg, "euler", "normal", mode, 4,
                1.0, 0.9))))
            renders = out["o"].args[1].shape[0]
            print(f"  {name} run {r + 1}: plain {plain[-1][0]:.2f} s (cpu {plain[-1][1]:.2f} s), "
                  + (f"plain+patch {patched[-1][0]:.2f} s, " if patched else "")
                  + f"sweep {sweeps[-1][0]:.2f} s (cpu {sweeps[-1][1]:.2f} s), {renders} renders", flush=True)
    med = lambda xs, i: statistics.median(x[i] for x in xs) if xs else float("nan")  # noqa: E731
    p, s, pc, sc, pp = med(plain, 0), med(sweeps, 0), med(plain, 1), med(sweeps, 1), med(patched, 0)
    return {"case": name, "mode": mode, "renders": renders, "plain": p, "plain_cpu": pc, "plain_patch": pp,
            "sweep": s, "sweep_cpu": sc, "ratio": s / (renders * p), "ratio_cpu": sc / (renders * pc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--with-patch", action="store_true", help="also time plain renders that re-patch the LoRA")
    ap.add_argument("--cases", default="sd15-solo,sdxl-groups",
                    help="comma-separated: sd15-solo, sd15-knock-out, sdxl-groups, sdxl-solo, sdxl-knock-out")
    args = ap.parse_args(argv)
    import torch
    from chopshop_dev.tiny_sd15 import CKPT_NAME as SD15, LORA_NAME as SD15_LORA
    from chopshop_dev.tiny_sdxl import CKPT_NAME as SDXL, LORA_NAME as SDXL_LORA
    with tempfile.TemporaryDirectory() as tmp:
        ns = setup(Path(tmp))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.size}x{args.size}, "
              f"{args.steps} steps, cfg {args.cfg}, euler/normal, median of {args.repeats}", flush=True)
        loaded, rows = {}, []
        for c in args.cases.split(","):
            arch, mode = c.split("-", 1)
            if arch not in loaded:
                loaded[arch] = load_case(ns, SD15, SD15_LORA, 768, None) if arch == "sd15" else \
                    load_case(ns, SDXL, SDXL_LORA, 2048, 1280)
            rows.append(bench_case(ns, arch, loaded[arch], mode, args))
    print("\n| case | renders | plain KSampler (wall / cpu) | plain + patch | sweep (wall / cpu) "
          "| sweep / (renders x plain), wall | same, cpu |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| tiny {r['case']} {r['mode']} | {r['renders']} | {r['plain']:.2f} / {r['plain_cpu']:.2f} s "
              f"| {r['plain_patch']:.2f} s | {r['sweep']:.2f} / {r['sweep_cpu']:.2f} s | **{r['ratio']:.3f}x** "
              f"| {r['ratio_cpu']:.3f}x |")
    return 0 if all(r["ratio"] <= LIMIT for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
