"""Chop time versus plain safetensors load+save of the same file, both timed in this process after imports.

    python bench/bench_chop.py            # prints a table; figures go to bench/README.md by hand
"""
from __future__ import annotations

import statistics

from common import fresh, load_save_baseline, machine, sdxl_locon_all, timed

from core.chop import chop
from core.lora_file import read
from core.save import save


def run_chop(path, **kw):
    out = fresh(path)
    lora = read(path)
    chopped, _ = chop(lora, **kw)
    save(chopped, out)
    size = out.stat().st_size
    out.unlink()
    return size


def main(repeats: int = 3) -> None:
    path = sdxl_locon_all(32)
    mib = path.stat().st_size / 2 ** 20
    print(f"file: {path.name} ({mib:.1f} MiB); {machine()}")
    n = len(read(path).blocks())
    cases = {
        "load+save (baseline)": lambda: load_save_baseline(path),
        "chop All The Layers (everything kept)": lambda: timed(run_chop, path, preset="All The Layers")[0],
        "chop Garfield (Character+Style)": lambda: timed(run_chop, path, preset="Garfield (Character+Style)")[0],
        "chop every block x0.5": lambda: timed(run_chop, path, vector="1," + ",".join(["0.5"] * n))[0],
    }
    results = {name: statistics.median(fn() for _ in range(repeats)) for name, fn in cases.items()}
    base = results["load+save (baseline)"]
    print(f"{'case':<42} {'seconds':>8} {'vs load+save':>13}")
    for name, s in results.items():
        print(f"{name:<42} {s:8.3f} {s / base:12.2f}x")


if __name__ == "__main__":
    main()
