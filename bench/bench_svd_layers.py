"""Per-layer SVD timings: dense thin SVD of B@A vs the factored QR route (core.svd.svd_product).

    python3 bench/bench_svd_layers.py [--all] [--device cpu|cuda] [--rank R] [--threads N]

Factors are random with a log-spaced spectrum from 1 to 0.01 (resize.md §7.1). Columns:
"dense" = B@A + torch.linalg.svd(full_matrices=False) as given; "tall" = core.svd.svd_dense, which
decomposes the tall orientation (only timed for wide matrices, where it differs); "QR" = svd_product.
Errors compare QR against dense: max|Δσ|/σ_1 over the top r, and the relative Frobenius error of the
rebuilt rank-16 ΔW. Dense is skipped above 40 M elements unless --all. Median of 3 runs below 2 M
elements, 1 run above.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.svd import svd_dense, svd_product  # noqa: E402

LAYERS = [  # (label, out, in', rank)
    ("SDXL attn 640x640", 640, 640, 32),
    ("SDXL attn 1280x1280", 1280, 1280, 32),
    ("SDXL ff.net.2 1280x5120", 1280, 5120, 32),
    ("SDXL ff.net.0.proj 10240x1280", 10240, 1280, 32),
    ("SDXL conv3x3 1280x11520", 1280, 11520, 32),
    ("Flux attn 3072x3072", 3072, 3072, 64),
    ("Flux linear1 21504x3072", 21504, 3072, 64),
]
DENSE_LIMIT = 40_000_000
KEEP = 16


def factors(out, in_, r, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q_out = torch.linalg.qr(torch.randn(out, r, generator=g))[0]
    Q_in = torch.linalg.qr(torch.randn(in_, r, generator=g))[0]
    s = torch.logspace(0, -2, r)
    return (Q_out * s).to(device), Q_in.T.contiguous().to(device)


def timed(fn, runs, device):
    times, result = [], None
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def dense_svd(B, A):
    return torch.linalg.svd(B @ A, full_matrices=False)


def rebuild(svd, k):
    U, S, Vh = svd
    return (U[:, :k] * S[:k]) @ Vh[:k]


def fmt(seconds):
    if seconds is None:
        return "skipped"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="also run dense SVD above 40 M elements")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rank", type=int, help="override every layer's rank")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, float32\n")
    header = ["layer (out x in')", "r", "dense thin", "tall (svd_dense)", "QR", "dense/QR"]
    header += ["σ err (rel)", "ΔW16 err (rel)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    svd_product(*factors(64, 64, 8, device))  # warm up lazy init
    wall = time.perf_counter()
    for label, out, in_, r in LAYERS:
        r = args.rank or r
        B, A = factors(out, in_, r, device)
        runs = 3 if out * in_ < 2_000_000 else 1
        t_qr, qr = timed(lambda: svd_product(B, A), max(runs, 3), device)
        t_dense = t_tall = None
        sv_err = dw_err = "-"
        if out * in_ <= DENSE_LIMIT or args.all:
            t_dense, dense = timed(lambda: dense_svd(B, A), runs, device)
            if out < in_:
                t_tall, _ = timed(lambda: svd_dense(B @ A), runs, device)
            S_d = dense[1][:r]
            sv_err = f"{float((qr[1] - S_d).abs().max() / S_d[0]):.1e}"
            want = rebuild(dense, KEEP)
            dw_err = f"{float(torch.linalg.norm(rebuild(qr, KEEP) - want) / torch.linalg.norm(want)):.1e}"
        ratio = f"{t_dense / t_qr:,.0f}x" if t_dense else "-"
        row = [label, str(r), fmt(t_dense), fmt(t_tall) if t_tall else "-", fmt(t_qr), ratio, sv_err, dw_err]
        print("| " + " | ".join(row) + " |", flush=True)
    print(f"\ntotal {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
