"""Chop time versus plain safetensors load+save of the same file, both timed in this process after imports;
then, with a checkout of elias-gaeros/resize_lora (--peers DIR or CHOPSHOP_PEERS, kept outside the
repository), a 0/1 chop as whole processes: `python -m core chop` against chop_blocks.py, run alternately,
each output deleted after its run, wall and CPU (user + system) time of each process.

    python bench/bench_chop.py [--repeat 3] [--peers /work/peers/resize_lora]   # figures go to bench/README.md

Whole processes run with Python's bytecode cache on (in a temporary PYTHONPYCACHEPREFIX, after one untimed
run of each), as in any install: an environment with PYTHONDONTWRITEBYTECODE=1 recompiles the pack's own
modules at every start (chop_blocks.py's imports are installed packages, cached either way).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ROOT, fresh, load_save_baseline, machine, sdxl_locon_all, timed

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


def in_process(path: Path, repeats: int) -> None:
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


def process(cmd: list, cwd: Path, env: dict, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of one whole process; its output is deleted."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    out.unlink()
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def whole_processes(path: Path, peers: Path, repeats: int) -> None:
    n = len(read(path).blocks())
    vec = "1," + ",".join("1" if i % 2 else "0" for i in range(n))
    full = ",".join(["1"] + ["1" if i % 2 else "0" for i in range(20)])   # chop_blocks' SDXL layout
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        out = Path(tmp) / "out.safetensors"
        runs = {"python -m core chop": ([sys.executable, "-m", "core", "chop", path, vec, "-o", out], ROOT),
                "chop_blocks.py": ([sys.executable, peers / "chop_blocks.py", path, full, "-o", out, "-q"], peers)}
        times: dict[str, list] = {name: [] for name in runs}
        for i in range(repeats + 1):
            for name, (cmd, cwd) in runs.items():
                wall_cpu = process(cmd, cwd, env, out)
                if i:                                   # the first round fills the bytecode cache
                    times[name].append(wall_cpu)
    print(f"\n0/1 chop (every other block), whole process, median of {repeats} alternating runs; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<22} {'wall s':>7} {'cpu s':>7}   runs (wall)")
    for name, t in times.items():
        print(f"{name:<22} {statistics.median(w for w, _ in t):7.2f} {statistics.median(c for _, c in t):7.2f}   "
              + ", ".join(f"{w:.2f}" for w, _ in t))
    ours, peer = (statistics.median(w for w, _ in times[k]) for k in runs)
    print(f"ours / chop_blocks.py: {ours / peer:.2f}x wall")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", default=os.environ.get("CHOPSHOP_PEERS"))
    ap.add_argument("--whole-only", action="store_true", help="skip the in-process table")
    a = ap.parse_args()
    path = sdxl_locon_all(32)
    print(f"file: {path.name} ({path.stat().st_size / 2 ** 20:.1f} MiB); {machine()}")
    if not a.whole_only:
        in_process(path, a.repeat)
    if a.peers:
        whole_processes(path, Path(a.peers).resolve(), a.repeat)
    else:
        print("\n(no --peers / CHOPSHOP_PEERS: the whole-process comparison with chop_blocks.py is skipped)")


if __name__ == "__main__":
    main()
