"""CPU thread count for many small tensor operations.

Per-module work (a QR of an (out, r) factor, scaling one tensor) is too small to gain from intra-op
parallelism; with several threads, OpenMP's synchronisation dominates and collapses when another process
keeps the cores busy (measured: chopping an SDXL file took 8.0 s with 2 threads under load, 0.38 s with 1).
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def cpu_threads(n: int = 1):
    """Run the block with ``n`` torch CPU threads, restoring the previous count afterwards (torch is imported
    here, not at module import, so header-only work that imports this module stays torch-free)."""
    import torch
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
