"""Whole-process time of a command-line error: ``python -m core inspect missing.safetensors`` (and a corrupt
header) against ``python -c pass`` run in the same session, so start-up of the interpreter is the baseline.
The path and header are checked before torch is imported; ``python -c "import torch"`` shows what that saves.

    python bench/bench_errors.py [--repeat N]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(argv: list[str], repeat: int) -> tuple[float, int]:
    """Median wall time of ``repeat`` runs of argv (after one warm-up run) and the exit status."""
    subprocess.run(argv, cwd=ROOT, capture_output=True)
    times, rc = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        rc = subprocess.run(argv, cwd=ROOT, capture_output=True).returncode
        times.append(time.perf_counter() - t)
    return statistics.median(times), rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        corrupt = Path(d) / "corrupt.safetensors"
        corrupt.write_bytes((16).to_bytes(8, "little") + b"{not json at all" + b"\0" * 32)
        cases = [
            ("python -c pass (baseline)", [py, "-c", "pass"]),
            ("inspect missing.safetensors", [py, "-m", "core", "inspect", str(Path(d) / "missing.safetensors")]),
            ("inspect corrupt header", [py, "-m", "core", "inspect", str(corrupt)]),
            ("chop missing.safetensors", [py, "-m", "core", "chop", str(Path(d) / "missing.safetensors"), "1,0"]),
            ('python -c "import torch" (avoided)', [py, "-c", "import torch"]),
        ]
        base = None
        print(f"{'case':<36} {'seconds':>8} {'vs baseline':>12}  exit")
        for label, argv in cases:
            s, rc = wall(argv, a.repeat)
            base = base or s
            print(f"{label:<36} {s:8.3f} {s / base:11.2f}x  {rc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
