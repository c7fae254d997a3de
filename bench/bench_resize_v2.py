"""Resize engine figures, side by side in one run (medians of --repeat runs; the machine is shared):

  A  SDXL LoCon r32, sv_fro 0.9: read+resize+save vs load+save, both in this process
  B  Flux r64, sv_fro 0.9: the same
  C  --fro-ckpt -3.55 with a full-size SDXL base (random fp16 weights, generated once under bench/out/):
     our whole CLI process with an empty norm cache vs elias-gaeros' resize_lora.py (whole process, its norm
     cache deleted first); and our in-process read+resize+save with a warm cache vs load+save of the LoRA
  D  a 0/1 chop, whole process: `python -m core chop` vs chop_blocks.py on the same file

Outputs (ours and the baselines') go to bench/out, or to CHOPSHOP_BENCH_SCRATCH (e.g. /dev/shm).
Peers are run from a copy outside the repository: --peers DIR or CHOPSHOP_PEERS (a checkout of
elias-gaeros/resize_lora); without it C's and D's peer columns are skipped with a message.

    python bench/bench_resize_v2.py [--only A,B,C,D] [--repeat 3] [--peers /work/peers/resize_lora]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SCRATCH, flux_all, fresh, load_save_baseline, machine, sdxl_locon_all
from sdxl_base import sdxl_base_random

from core.gc_freeze import freeze_imports
from core.lora_file import read
from core.resize import Rule, resize_file

PY = sys.executable


def ours_in_process(path: Path, rule: Rule, base: Path | None = None, cache: Path | None = None) -> tuple[float, dict]:
    """``resize_file`` in this process (what the CLI runs): read, resize, save."""
    out = fresh(path)
    t = time.perf_counter()
    report = resize_file(path, rule, output=out, dtype="fp16", device="cpu", base=base, norm_cache=cache)
    dt = time.perf_counter() - t
    out.unlink()
    return dt, report


def whole(cmd: list, cwd: Path = ROOT) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return dt


def med(fn, n: int) -> float:
    return statistics.median(fn() for _ in range(n))


def case_in_process(name: str, path: Path, rule: Rule, n: int) -> None:
    base = med(lambda: load_save_baseline(path), n)
    runs = [ours_in_process(path, rule) for _ in range(n)]
    ours = statistics.median(r[0] for r in runs)
    rep = runs[0][1]
    print(f"{name}: {path.name} {path.stat().st_size / 2 ** 20:.0f} MiB, {len(rep['layers'])} modules, "
          f"{rule.describe()}: load+save {base:.2f} s, ours {ours:.2f} s = {ours / base:.2f}x "
          f"(runs {', '.join(f'{r[0]:.2f}' for r in runs)}; mean retention {100 * rep['fro_retention_mean']:.1f}%)")


def case_fro_ckpt(lora: Path, peers: Path | None, n: int) -> None:
    base = sdxl_base_random()
    cold = []
    for _ in range(n):
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            cold.append(whole([PY, "-m", "core", "resize", lora, "--fro-ckpt", "-3.55", "--base", base,
                               "--norm-cache", Path(tmp) / "cache", "-o", Path(tmp) / "o.safetensors", "--json"]))
    line = f"C: fro_ckpt -3.55, base {base.stat().st_size / 2 ** 30:.1f} GiB: ours whole process, empty cache " \
           f"{statistics.median(cold):.2f} s (runs {', '.join(f'{c:.2f}' for c in cold)})"
    if peers is not None:
        el = []
        for _ in range(n):
            (peers / "norms_cache.json").unlink(missing_ok=True)
            with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
                el.append(whole([PY, peers / "resize_lora.py", base, lora, "-o", tmp, "-d", "cpu",
                                 "-r", "fro_ckpt=1,thr=-3.55"], cwd=peers))
        line += f"; elias resize_lora.py {statistics.median(el):.2f} s (runs {', '.join(f'{e:.2f}' for e in el)})"
    print(line)
    warm_dir = Path(tempfile.mkdtemp(dir=SCRATCH))
    ours_in_process(lora, Rule("fro_ckpt", -3.55), base, warm_dir)       # fills the cache
    warm = [ours_in_process(lora, Rule("fro_ckpt", -3.55), base, warm_dir)[0] for _ in range(n)]
    ls = med(lambda: load_save_baseline(lora), n)
    shutil.rmtree(warm_dir)
    print(f"C: warm cache, in process: ours {statistics.median(warm):.2f} s vs load+save {ls:.2f} s = "
          f"{statistics.median(warm) / ls:.2f}x")


def case_chop(lora: Path, peers: Path | None, n: int) -> None:
    """Both with Python's bytecode cache on, as in any install (in a temporary PYTHONPYCACHEPREFIX, filled by
    one untimed run of each): PYTHONDONTWRITEBYTECODE=1 would recompile the pack's modules at every start."""
    n_blocks = len(read(lora).blocks())
    vec = "1," + ",".join("1" if i % 2 else "0" for i in range(n_blocks))
    saved = {k: os.environ.pop(k, None) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    cache = tempfile.mkdtemp(dir=SCRATCH)
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    try:
        _case_chop(lora, peers, n, vec)
    finally:
        os.environ.pop("PYTHONPYCACHEPREFIX")
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        shutil.rmtree(cache)


def _case_chop(lora: Path, peers: Path | None, n: int, vec: str) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        ours = [whole([PY, "-m", "core", "chop", lora, vec, "-o", Path(tmp) / f"o{i}.safetensors"])
                for i in range(n + 1)][1:]
    line = f"D: 0/1 chop whole process: ours {statistics.median(ours):.2f} s (runs {', '.join(f'{x:.2f}' for x in ours)})"
    if peers is not None:
        full = ",".join(["1"] + ["1" if i % 2 else "0" for i in range(20)])   # chop_blocks' SDXL layout
        with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
            el = [whole([PY, peers / "chop_blocks.py", lora, full, "-o", Path(tmp) / f"e{i}.safetensors", "-q"],
                        cwd=peers) for i in range(n + 1)][1:]
        line += f"; chop_blocks.py {statistics.median(el):.2f} s (runs {', '.join(f'{x:.2f}' for x in el)})"
    print(line)


def main() -> None:
    freeze_imports()     # as `python -m core resize` does once torch is imported (core/gc_freeze.py)
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="A,B,C,D")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peers", default=os.environ.get("CHOPSHOP_PEERS"))
    a = ap.parse_args()
    peers = Path(a.peers) if a.peers else None
    if peers is not None and not (peers / "resize_lora.py").exists():
        print(f"no resize_lora.py under {peers}; peer comparisons skipped")
        peers = None
    elif peers is None:
        print("no --peers / CHOPSHOP_PEERS: peer comparisons skipped")
    print(machine())
    only = set(a.only.split(","))
    lora = sdxl_locon_all(32)
    if "A" in only:
        case_in_process("A", lora, Rule("sv_fro", 0.9), a.repeat)
    if "B" in only:
        case_in_process("B", flux_all(64), Rule("sv_fro", 0.9), a.repeat)
    if "C" in only:
        case_fro_ckpt(lora, peers, a.repeat)
    if "D" in only:
        case_chop(lora, peers, a.repeat)


if __name__ == "__main__":
    main()
