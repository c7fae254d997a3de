"""Keeping import-time objects out of Python's cyclic garbage collector, in the pack's own processes.

With torch imported a process holds about 170,000 objects that live until it exits. A full collection walks
every one of them; one happens during most SDXL resizes, on the thread every worker waits for, and took
0.12-0.13 s of a 1.0-1.5 s resize (0.015 s in all once frozen; bench/README.md, "Resize engine v2").
``gc.freeze`` leaves everything alive at the time out of later collections; objects that die later are still
freed by reference counting. Only for processes the pack owns (the command line, batch workers), never inside
ComfyUI, whose objects are not ours to freeze.
"""
from __future__ import annotations

import gc

_done = False


def freeze_imports() -> None:
    """Freeze what is alive now (once per process; call it right after the heavy imports)."""
    global _done
    if not _done:
        gc.freeze()
        _done = True
