"""Inspect benchmark: time and peak memory of `python -m core inspect` on a ~200 MB SDXL LoRA.

    python3 bench/bench_inspect.py [--runs N] [--no-readme]

Builds once (cached in bench/out/, git-ignored) an SDXL LyCORIS-style LoCon, rank 32 (conv rank 32), on every
Linear/Conv2d of the UNet and every CLIP-L/CLIP-G attention/MLP layer, fp16, with kohya names. Then runs, each
in a fresh subprocess: a bare `import torch` (baseline), the header-only layout (`--layout-only`) and the full
inspect with energies. Reports wall time and the child's peak RSS (ru_maxrss from wait4), the file size and
peak RSS / file size, and refreshes the "## Inspect" section of bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
FILE = OUT / "sdxl_locon_r32_full.safetensors"
README = ROOT / "bench" / "README.md"


def build(path: Path, rank: int = 32) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from chopshop_dev import synth

    gen = torch.Generator().manual_seed(0)
    sd = {}
    for layer, shape in synth.layers("shapes_sdxl_unet").items():
        kind = "locon" if len(shape) == 4 else "lora"
        for suffix, t in synth.module_tensors(shape, kind, rank, gen, alpha=rank / 2).items():
            sd[synth.kohya_unet(layer) + suffix] = t
    te = {**synth.clip_all("lora_te1_", "shapes_clip_l"), **synth.clip_all("lora_te2_", "shapes_clip_g")}
    for name, shape in te.items():
        for suffix, t in synth.module_tensors(shape, "lora", rank, gen, alpha=rank / 2).items():
            sd[name + suffix] = t
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_dim": str(rank), "ss_network_alpha": str(rank / 2),
            "ss_base_model_version": "sdxl_base_v1-0",
            "ss_network_args": '{"algo": "locon", "preset": "full", "conv_dim": "32", "conv_alpha": "16"}'}
    tmp = path.with_suffix(".tmp")
    synth.write(tmp, sd, meta)
    os.replace(tmp, path)


def measure(cmd: list[str]) -> tuple[float, int, int]:
    """(seconds, peak RSS bytes, exit status) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.strip()[-500:]}")
    rss = ru.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return dt, rss, p.returncode


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (best time, max RSS)")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        build(FILE)
        return 0
    if not FILE.exists():
        # built in a child: Linux carries a process's RSS high-water mark into children forked from it, so
        # the measuring process must stay small (it never imports torch)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-only"], check=True)
        print(f"built {FILE.relative_to(ROOT)} in {time.perf_counter() - t0:.1f} s")
    size = FILE.stat().st_size
    py = sys.executable
    cases = [("bare `import torch` (baseline)", [py, "-c", "import torch"]),
             ("inspect --layout-only (header only)", [py, "-m", "core", "inspect", str(FILE), "--layout-only", "--json"]),
             ("inspect (full, with energies)", [py, "-m", "core", "inspect", str(FILE), "--json"])]
    rows = []
    for label, cmd in cases:
        times, rss = [], 0
        for _ in range(args.runs):
            dt, r, _ = measure(cmd)
            times.append(dt)
            rss = max(rss, r)
        rows.append((label, min(times), rss))
    import json
    rep = json.loads(subprocess.run([py, "-m", "core", "inspect", str(FILE), "--json", "--layout-only"], cwd=ROOT,
                                    capture_output=True, text=True, check=True).stdout)
    lines = [f"File: `bench/out/{FILE.name}`: {size / 1e6:.1f} MB ({mib(size)}), {rep['tensors']} tensors, "
             f"{rep['modules']} modules, {len(rep['blocks'])} blocks, architecture {rep['architecture']}.",
             "",
             "| run | time (best of %d) | peak RSS | peak RSS / file size |" % args.runs,
             "|---|---|---|---|"]
    base = rows[0][2]
    for label, t, rss in rows:
        lines.append(f"| {label} | {t:.2f} s | {mib(rss)} | {rss / size:.2f} |")
    full = rows[2][2]
    lines += ["",
              f"Peak RSS above the torch baseline: layout {mib(rows[1][2] - base)}, full {mib(full - base)}. "
              f"Full inspect peak RSS / file size = {full / size:.2f} (requirement: well below 2).",
              "",
              f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"measured {time.strftime('%Y-%m-%d')} (shared machine: times vary with load).",
              "Reproduce: `python3 bench/bench_inspect.py`."]
    text = "\n".join(lines)
    print(text)
    if not args.no_readme:
        write_section(text)
    return 0 if full < 2 * size else 1


def write_section(body: str) -> None:
    section = "## Inspect\n\n" + body.strip() + "\n"
    if README.exists():
        old = README.read_text()
    else:
        old = "# Benchmarks\n\nFigures from the scripts in this folder; each section is refreshed by its script.\n"
    m = re.search(r"^## Inspect\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
    new = old[:m.start()] + section + ("\n" + old[m.end():] if old[m.end():].strip() else "") if m \
        else old.rstrip("\n") + "\n\n" + section
    README.write_text(new)


if __name__ == "__main__":
    raise SystemExit(main())
