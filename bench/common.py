"""Shared helpers of the benchmark scripts: realistic files from the real layer tables, timers."""
from __future__ import annotations

import gc
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# where timed runs write their outputs (both sides alike): CHOPSHOP_BENCH_SCRATCH=/dev/shm keeps the disk's
# writeback of earlier runs out of the figures (on this machine it swung load+save from 0.23 s to 1.7 s)
SCRATCH = Path(os.environ.get("CHOPSHOP_BENCH_SCRATCH", OUT))
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from chopshop_dev import synth  # noqa: E402


def sdxl_locon_all(rank: int = 32) -> Path:
    """SDXL LoCon, rank 32 on every UNet Linear/Conv (LyCORIS preset=full) and every CLIP-L/G layer, fp16."""
    path = OUT / f"sdxl_locon_r{rank}.safetensors"
    if not path.exists():
        unet = {k: s for k, s in synth.layers("shapes_sdxl_unet").items() if synth.in_blocks(k, synth.SDXL_BLOCKS)}
        sd = synth.build(unet, synth.kohya_unet, "locon", rank, alpha=rank / 2, seed=1)
        te = {**synth.clip_all("lora_te1_", "shapes_clip_l"), **synth.clip_all("lora_te2_", "shapes_clip_g")}
        sd.update(synth.build(te, lambda n: n, "lora", rank, alpha=rank / 2, seed=2))
        synth.write(path, sd, synth.SEED_META)
    return path


def flux_all(rank: int = 64) -> Path:
    """Flux.1 LoRA, rank 64 on every Linear of the 19 double and 38 single blocks (kohya names), fp16."""
    path = OUT / f"flux_r{rank}.safetensors"
    if not path.exists():
        layers = {k: s for k, s in synth.layers("shapes_flux_dev_transformer").items()
                  if re.match(r"^diffusion_model\.(double|single)_blocks\.", k)}
        sd = synth.build(layers, synth.kohya_unet, "lora", rank, alpha=rank, seed=3)
        synth.write(path, sd, {"ss_base_model_version": "flux1", "ss_network_dim": str(rank)})
    return path


def timed(fn, *a, **kw):
    gc.collect()
    t = time.perf_counter()
    r = fn(*a, **kw)
    return time.perf_counter() - t, r


def load_save_baseline(path: Path) -> float:
    """Plain safetensors load_file + save_file of the same file, timed in this process."""
    from safetensors.torch import load_file, save_file
    tmp = SCRATCH / f".baseline-{os.getpid()}.safetensors"
    t = time.perf_counter()
    sd = load_file(str(path))
    save_file(sd, str(tmp), metadata={"format": "pt"})
    dt = time.perf_counter() - t
    tmp.unlink()
    del sd
    return dt


def machine() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus"


def fresh(path: Path) -> Path:
    """A free output path under SCRATCH (outputs are deleted after timing)."""
    p = SCRATCH / f"{path.stem}-{os.getpid()}-{time.time_ns()}.safetensors"
    return p
