"""Batch throughput: files per second of ``batch resize`` with --jobs 1 vs --jobs 2 (process pool), and through a
local Dask cluster (2 worker processes x 1 thread) vs the pool.

The library: N SDXL LoRAs, rank 16 on every Linear of the transformer blocks of INP04-05, MID and OUT03-05
(200 modules, kohya names, fp16, 19 MiB each), resized with --sv-fro 0.9. Each case runs
R times into a fresh OUTDIR; the median wall time is reported (the machine is shared: medians, not minimums).
Pool times include starting the pool (a batch pays it); the Dask cluster is started once, before timing, as a
site's running cluster would be.

    .runtime/venv/bin/python bench/bench_batch.py [--files 96] [--repeats 3]

A batch pays a fixed start (pool, the workers' torch import, reports) once, so the ratio grows with the
library; the script prints that fixed part and the per-file work separately.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import time

from common import OUT, ROOT, synth  # noqa: F401  (sets sys.path)

os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")

from core.batch import run_batch  # noqa: E402

LIB = OUT / "batch_lib"
RULE = {"sv_fro": 0.9, "dtype": "fp16", "device": "cpu"}


def build_library(n: int) -> list:
    import torch
    torch.set_num_threads(1)
    unet = {k: s for k, s in synth.layers("shapes_sdxl_unet").items()
            if re.search(r"(input_blocks\.[45]|output_blocks\.[345]|middle_block)\.1\.transformer", k) and len(s) == 2}
    paths = []
    for i in range(n):
        p = LIB / f"sdxl-{i:03d}.safetensors"
        if not p.exists():
            sd = synth.build(unet, synth.kohya_unet, "lora", 16, alpha=8, seed=1000 + i)
            synth.write(p, sd, {"ss_network_dim": "16", "ss_network_alpha": "8"})
        paths.append(p)
    return paths


def timed(paths, jobs=None, cluster=None) -> tuple[float, float]:
    """Wall seconds of one batch, and the sum of its per-file task seconds."""
    out = OUT / "batch_out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = run_batch("resize", [str(p) for p in paths], out, RULE, jobs=jobs, cluster=cluster, progress=False)
    dt = time.perf_counter() - t0
    assert report["summary"]["done"] == len(paths), report["summary"]
    return dt, sum(r["seconds"] for r in report["files"])


def median_time(label, repeats, **kw) -> tuple[float, float]:
    runs = [timed(**kw) for _ in range(repeats)]
    med, task = statistics.median(t for t, _ in runs), statistics.median(s for _, s in runs)
    print(f"{label:<28} runs {', '.join(f'{t:.2f}' for t, _ in runs)} s  median {med:.2f} s  "
          f"(sum of per-file task seconds {task:.2f})", flush=True)
    return med, task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-dask", action="store_true")
    a = ap.parse_args()
    paths = build_library(a.files)
    mib = sum(p.stat().st_size for p in paths) / 2 ** 20
    print(f"{len(paths)} SDXL rank-16 LoRAs, {mib / len(paths):.1f} MiB each; resize --sv-fro 0.9; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    t1, task1 = median_time("process pool --jobs 1", a.repeats, paths=paths, jobs=1)
    t2, task2 = median_time("process pool --jobs 2", a.repeats, paths=paths, jobs=2)
    print(f"files/s: jobs 1 {len(paths) / t1:.2f}, jobs 2 {len(paths) / t2:.2f}; jobs 2 vs 1: {t1 / t2:.2f}x")
    serial = max(0.0, t1 - task1)
    print(f"serial part of --jobs 1 (pool start, driver, reports): {serial:.2f} s; per-file work {task1:.2f} s; "
          f"with 2 idle cores --jobs 2 would take {serial + task1 / 2:.2f} s: {t1 / (serial + task1 / 2):.2f}x "
          f"(per-file work under --jobs 2 took {task2 / task1:.2f}x as long as under --jobs 1)")
    print(f"fixed part of --jobs 2 (wall minus half its per-file work): {max(0.0, t2 - task2 / 2):.2f} s")
    if a.no_dask:
        return
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        timed(paths, cluster=lc.scheduler_address)           # warm-up: workers import torch once
        td, _ = median_time("dask 2 workers x 1 thread", a.repeats, paths=paths, cluster=lc.scheduler_address)
    print(f"files/s: dask {len(paths) / td:.2f}; dask vs pool --jobs 2: {t2 / td:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
