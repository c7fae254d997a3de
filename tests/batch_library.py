"""A small LoRA library for the batch tests: mixed architectures, naming styles and adapter kinds in nested
folders, plus corrupt files and one LoRA whose spectrum is flat (so a low-rank resize keeps little of it)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chopshop_dev import synth  # noqa: E402

CASES = [(s, a) for s, archs in synth.STYLE_ARCHS.items() for a in archs]


def sha256(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def flat_spectrum_lora(rank: int = 48, seed: int = 7) -> dict[str, torch.Tensor]:
    """SD1.5 kohya LoRA whose ΔW = U·Vᵀ on every layer: ``rank`` equal singular values, so keeping k of them
    retains exactly sqrt(k / rank) of the Frobenius norm."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for layer, shape in list(synth.subset_layers("sd15", non_block=False).items())[:6]:
        if len(shape) != 2 or min(shape) < rank:
            continue
        U, _ = torch.linalg.qr(torch.randn(shape[0], rank, generator=gen, dtype=torch.float64))
        V, _ = torch.linalg.qr(torch.randn(shape[1], rank, generator=gen, dtype=torch.float64))
        name = synth.kohya_unet(layer)
        sd[name + ".lora_up.weight"] = (U * 0.1).float().contiguous()
        sd[name + ".lora_down.weight"] = (V.T * 0.1).float().contiguous()
        sd[name + ".alpha"] = torch.tensor(float(rank))
    return sd


def build_library(root: Path, n_good: int = 40) -> dict:
    """Write ``n_good`` good LoRAs (one of them the flat-spectrum file), 3 corrupt ones; returns their paths."""
    good = []
    for i, (style, arch) in enumerate(CASES[: n_good - 2]):
        spec = synth.make_style(style, arch, rank=2, seed=i, te=(i % 3 == 0),
                                dtype=torch.float16 if i % 2 else torch.bfloat16)
        folder = root / arch / ("deep/er" if i % 4 == 0 else "")
        good.append(synth.write(folder / f"{style}.safetensors", spec.sd, {"ss_network_dim": "2"}))
    zoo = synth.sdxl_adapter_zoo(seed=3)     # LoHa, LoKr, Tucker, DoRA, (IA)^3, OFT ... (no full diff: it is
    zoo_sd = {k: v for k, v in zoo.sd.items() if not k.endswith((".diff", ".diff_b"))}  # full-rank noise)
    good.append(synth.write(root / "lycoris_zoo.safetensors", zoo_sd, zoo.metadata))
    flat = synth.write(root / "sd15" / "flat-spectrum.safetensors", flat_spectrum_lora())
    good.append(flat)
    src = good[0].read_bytes()
    corrupt = [root / "broken" / "truncated.safetensors", root / "broken" / "garbage.safetensors",
               root / "bad-header.safetensors"]
    corrupt[0].parent.mkdir(parents=True, exist_ok=True)
    corrupt[0].write_bytes(src[: len(src) // 2])
    corrupt[1].write_bytes(bytes(range(256)) * 8)
    corrupt[2].write_bytes((20).to_bytes(8, "little") + b'{"a": [1, 2, 3 ,,,]}' + b"\0" * 64)
    return {"good": good, "flat": flat, "corrupt": corrupt}
