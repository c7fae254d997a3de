"""A 0/1 chop and a header-only inspect run without importing torch or numpy (docs/resize.md is about resize;
the chop fast path copies byte ranges and checks them for NaN/Inf on their raw bytes)."""
import subprocess
import sys
from pathlib import Path

import torch

from chopshop_dev import synth

ROOT = Path(__file__).resolve().parent.parent


def test_zero_one_chop_and_layout_inspect_import_no_torch(tmp_path):
    sd = synth.sdxl_lycoris_full(rank=2, conv_rank=2)
    p = synth.write(tmp_path / "l.safetensors", {k: v.to(torch.float16) if v.ndim else v for k, v in sd.items()})
    code = ("import sys; from core.cli import main; "
            f"rc = main(['inspect', {str(p)!r}, '--layout-only']); "
            f"rc |= main(['chop', {str(p)!r}, '--preset', 'All The Layers', '-o', {str(tmp_path / 'o.safetensors')!r}]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'numpy' not in sys.modules, 'numpy was imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o.safetensors").exists()
