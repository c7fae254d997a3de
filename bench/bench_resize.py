"""SVD Resize: ours (factored QR route) versus a dense-SVD resize (kohya's route: form up@down, full SVD) and
versus plain safetensors load+save of the same file; all timed inside this process after imports.

The dense route is timed once per distinct layer shape and multiplied by how many modules have that shape
(identical shapes cost the same); ``--dense-full`` times it on every module instead (SDXL: minutes, Flux: hours).

    python bench/bench_resize.py [--only sdxl|flux] [--dense-full] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from common import fresh, load_save_baseline, machine, sdxl_locon_all, flux_all, timed

from core.lora_file import read
from core.resize import Rule, resize
from core.save import save
from core.threads import cpu_threads


def ours(path, device, rule):
    out = fresh(path)
    t = time.perf_counter()
    lora = read(path)
    resized, report = resize(lora, rule, dtype="fp16", device=device)
    save(resized, out)
    dt = time.perf_counter() - t
    size = out.stat().st_size
    out.unlink()
    return dt, report, size


def dense_module(up: torch.Tensor, down: torch.Tensor, k: int, device) -> None:
    """kohya's core: the dense delta, a full SVD, truncation."""
    up, down = up.to(device, torch.float32), down.to(device, torch.float32)
    W = up.flatten(1) @ down.flatten(1)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    (U[:, :k] * S[:k]).cpu(), Vh[:k].cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()


def dense_resize_seconds(path, device, k, full=False):
    lora = read(path)
    groups = Counter()
    sample = {}
    for m in lora.modules:
        key = (m.shapes["up"], m.shapes["down"])
        groups[key] += 1
        sample.setdefault(key, m)
    total = 0.0
    mods = lora.modules if full else list(sample.values())
    for m in mods:
        t = lora.module_tensors(m)
        dt = float("inf")
        for threads in ((1, 2) if device.type == "cpu" else (torch.get_num_threads(),)):
            with cpu_threads(threads):  # the dense route at its best thread count on this machine
                dt = min(dt, timed(dense_module, t["up"], t["down"], k, device)[0])
        total += dt if full else dt * groups[(m.shapes["up"], m.shapes["down"])]
    return total, len(groups)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["sdxl", "flux"])
    ap.add_argument("--dense-full", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    print(machine(), "device", device)
    cases = [("sdxl", sdxl_locon_all, 32, Rule("rank", 16)), ("flux", flux_all, 64, Rule("rank", 32))]
    for name, make, r, rule in cases:
        if a.only and a.only != name:
            continue
        path = make(r)
        mib = path.stat().st_size / 2 ** 20
        base = min(load_save_baseline(path) for _ in range(2))
        runs = [ours(path, device, rule) for _ in range(2)]
        t_ours, report, size = min(runs, key=lambda x: x[0])
        t_dense, shapes = dense_resize_seconds(path, device, int(rule.value), a.dense_full)
        how = "every module" if a.dense_full else f"{shapes} shapes x counts"
        print(f"\n{name}: {path.name} {mib:.1f} MiB, {len(report['layers'])} modules, rank {r} -> {rule.value}")
        print(f"  load+save baseline        {base:8.2f} s")
        print(f"  ours (read+resize+save)   {t_ours:8.2f} s   = {t_ours / base:.2f}x load+save"
              f"   (SVD part {report['compute_seconds']:.2f} s; output {size / 2 ** 20:.1f} MiB,"
              f" mean retention {100 * report['fro_retention_mean']:.2f}%)")
        print(f"  dense-SVD resize          {t_dense:8.2f} s   ({how})  -> ours is {t_dense / t_ours:.0f}x faster")


if __name__ == "__main__":
    main()
