"""Batch throughput: files per second of ``batch resize`` with --jobs 1 vs --jobs 2 (process pool), and through a
local Dask cluster (2 worker processes x 1 thread) vs the pool.

The library: N SDXL LoRAs, rank 16 on every Linear of the transformer blocks of INP04-05, MID and OUT03-05
(200 modules, kohya names, fp16, 19 MiB each), resized with --sv-fro 0.9. Each case runs
R times into a fresh OUTDIR; the median wall time is reported (the machine is shared: medians, not minimums).
Pool times include starting the pool (a batch pays it); the Dask cluster is started once, before timing, as a
site's running cluster would be.

    .runtime/venv/bin/python bench/bench_batch.py [--files 24] [--repeats 3]
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


def timed(paths, jobs=None, cluster=None) -> float:
    out = OUT / "batch_out"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = run_batch("resize", [str(p) for p in paths], out, RULE, jobs=jobs, cluster=cluster, progress=False)
    dt = time.perf_counter() - t0
    assert report["summary"]["done"] == len(paths), report["summary"]
    return dt


def median_time(label, repeats, **kw) -> float:
    times = [timed(**kw) for _ in range(repeats)]
    med = statistics.median(times)
    print(f"{label:<28} runs {', '.join(f'{t:.2f}' for t in times)} s  median {med:.2f} s", flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-dask", action="store_true")
    a = ap.parse_args()
    paths = build_library(a.files)
    mib = sum(p.stat().st_size for p in paths) / 2 ** 20
    print(f"{len(paths)} SDXL rank-16 LoRAs, {mib / len(paths):.1f} MiB each; resize --sv-fro 0.9; "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    t1 = median_time("process pool --jobs 1", a.repeats, paths=paths, jobs=1)
    t2 = median_time("process pool --jobs 2", a.repeats, paths=paths, jobs=2)
    print(f"files/s: jobs 1 {len(paths) / t1:.2f}, jobs 2 {len(paths) / t2:.2f}; jobs 2 vs 1: {t1 / t2:.2f}x")
    if a.no_dask:
        return
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        timed(paths, cluster=lc.scheduler_address)           # warm-up: workers import torch once
        td = median_time("dask 2 workers x 1 thread", a.repeats, paths=paths, cluster=lc.scheduler_address)
    print(f"files/s: dask {len(paths) / td:.2f}; dask vs pool --jobs 2: {t2 / td:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
