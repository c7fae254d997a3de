#!/usr/bin/env python3
"""Block Impact Sweep wall time against plain KSampler renders of the same settings, in one process.

    .runtime/venv/bin/python bench/bench_sweep.py [--repeats 3] [--steps 20] [--size 64]

ComfyUI 0.3.75 is loaded in-process (chopshop_dev/comfy_runtime.load_comfy_inprocess, this checkout as a custom node
pack) with the tiny test checkpoints (random weights; text encoders not loaded, the prompts are fixed random
tensors). For each case:

* plain: ``nodes.common_ksampler`` (what KSampler runs, its step previews included) on the model patched with
  the full LoRA, timed after one warm-up render, so no LoRA patching is in it: the strictest baseline.
* plain + patch (``--with-patch``): the same render on a fresh clone each time (the LoRA re-patched, as when a
  block weight is changed by hand between queues).
* sweep: the node's ``execute`` (every render patched, sampled and VAE-decoded, energies, grid and chart).

Each of the ``--repeats`` runs times ``--plain`` plain renders just before the sweep and as many just after it
(after a new warm-up render), so the baseline sees the machine's load of the moment; one plain render is their
median, and the run's ratio is sweep / (renders x plain), for wall time and for this process's CPU time (all
threads). Printed: the medians over the runs, and the best run. Exit status 1 when the median wall-time ratio
is above 1.15. ``--profile N`` prints the N costliest functions of one
more sweep per case (cProfile, cumulative time), outside the timed runs.
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


def profile(fn, top: int) -> None:
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.runcall(fn)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def plain_runs(ns, full, settings, count: int) -> list[tuple[float, float]]:
    """``count`` timed plain renders after one untimed warm-up render (which patches the full LoRA)."""
    ns.nodes.common_ksampler(full, *settings)
    return [timed(lambda: ns.nodes.common_ksampler(full, *settings)) for _ in range(count)]


def bench_case(ns, name, case, mode, args):
    import torch
    N = ns.nodes.NODE_CLASS_MAPPINGS
    model, vae, lora, pos, neg = case
    latent = N["EmptyLatentImage"]().generate(args.size, args.size, 1)[0]
    settings = (args.seed, args.steps, args.cfg, "euler", "normal", pos, neg, latent)
    full = N["ChopShopApplyLoRA"].execute(model, lora, 1.0, 0.0).args[0]
    sweep = N["ChopShopBlockSweep"]
    run = lambda: sweep.execute(model, lora, vae, pos, neg, latent, args.seed, args.steps, args.cfg,  # noqa: E731
                                "euler", "normal", mode, 4, 1.0, 0.9)
    plain, patched, sweeps, ratios, renders = [], [], [], [], None
    med = statistics.median
    with torch.inference_mode():
        for r in range(args.repeats):
            around = plain_runs(ns, full, settings, args.plain)
            if args.with_patch:
                fresh = N["ChopShopApplyLoRA"].execute(model, lora, 1.0, 0.0).args[0]
                patched.append(timed(lambda: ns.nodes.common_ksampler(fresh, *settings)))
            out = {}
            sweeps.append(timed(lambda: out.setdefault("o", run())))
            renders = out["o"].args[1].shape[0]
            around += plain_runs(ns, full, settings, args.plain)
            plain.append((med(x[0] for x in around), med(x[1] for x in around)))
            ratios.append((sweeps[-1][0] / (renders * plain[-1][0]), sweeps[-1][1] / (renders * plain[-1][1])))
            print(f"  {name} run {r + 1}: plain {plain[-1][0]:.2f} s (cpu {plain[-1][1]:.2f} s; median of "
                  f"{len(around)}), " + (f"plain+patch {patched[-1][0]:.2f} s, " if patched else "")
                  + f"sweep {sweeps[-1][0]:.2f} s (cpu {sweeps[-1][1]:.2f} s), {renders} renders: "
                  f"{ratios[-1][0]:.3f}x wall, {ratios[-1][1]:.3f}x cpu", flush=True)
        if args.profile:
            profile(run, args.profile)
    col = lambda xs, i: med(x[i] for x in xs) if xs else float("nan")  # noqa: E731
    return {"case": name, "mode": mode, "renders": renders, "plain": col(plain, 0), "plain_cpu": col(plain, 1),
            "plain_patch": col(patched, 0), "sweep": col(sweeps, 0), "sweep_cpu": col(sweeps, 1),
            "ratio": col(ratios, 0), "ratio_cpu": col(ratios, 1), "best": min(x[0] for x in ratios),
            "best_cpu": min(x[1] for x in ratios)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plain", type=int, default=2,
                    help="plain renders timed just before and again just after each sweep (default 2 + 2)")
    ap.add_argument("--with-patch", action="store_true", help="also time plain renders that re-patch the LoRA")
    ap.add_argument("--profile", metavar="N", type=int, default=0,
                    help="print the N costliest functions (cumulative) of one extra sweep per case, under cProfile")
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
          "| sweep / (renders x plain), wall | same, cpu | best run, wall / cpu |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| tiny {r['case']} {r['mode']} | {r['renders']} | {r['plain']:.2f} / {r['plain_cpu']:.2f} s "
              f"| {patch_cell(r['plain_patch'])} | {r['sweep']:.2f} / {r['sweep_cpu']:.2f} s | **{r['ratio']:.3f}x** "
              f"| {r['ratio_cpu']:.3f}x | {r['best']:.3f}x / {r['best_cpu']:.3f}x |")
    return 0 if all(r["ratio"] <= LIMIT for r in rows) else 1


def patch_cell(seconds: float) -> str:
    """The plain + patch column: "-" where --with-patch was not asked for."""
    return "-" if seconds != seconds else f"{seconds:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
