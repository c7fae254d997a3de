"""Base-model weights for the checkpoint-relative rank rules (``fro_ckpt``, ``spn_ckpt``).

A ``BaseWeights`` answers "the base weight W0 of this target" from any source: a single-file checkpoint
or a diffusion-model file (CLI), or ComfyUI's loaded MODEL/CLIP state dicts (nodes). Checkpoint names are
mapped from ComfyUI's model keys, including SDXL's OpenCLIP-format CLIP-G (``in_proj_weight`` packed
``[q; k; v]``, sliced in that order — elias's mapper gets it wrong, resize.md §8).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import torch

from .architectures import Target
from .errors import ChopShopError
from .safetensors_file import TensorReader

_CLIP_G_ATTN = re.compile(r"^clip_g\.transformer\.text_model\.encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc([12]))\.weight$")


def checkpoint_candidates(key: str) -> list[tuple[str, tuple[int, int] | None, bool]]:
    """Names a ComfyUI model key may have in a checkpoint: (name, row range or None, transposed)."""
    out: list[tuple[str, tuple[int, int] | None, bool]] = []
    if key.startswith("diffusion_model."):
        rest = key[len("diffusion_model."):]
        out += [("model." + key, None, False), (key, None, False), (rest, None, False)]
    for enc, prefixes in (("clip_l.", ["conditioner.embedders.0.", "cond_stage_model.", "text_encoders.clip_l.",
                                       "clip_l.", "te1."]),
                          ("clip_g.", ["text_encoders.clip_g.", "clip_g.", "conditioner.embedders.1."]),
                          ("t5xxl.", ["text_encoders.t5xxl.", "t5xxl.", ""])):
        if key.startswith(enc):
            rest = key[len(enc):]
            out += [(p + rest, None, False) for p in prefixes]
    m = _CLIP_G_ATTN.match(key)
    if m:
        layer = f"conditioner.embedders.1.model.transformer.resblocks.{m.group(1)}."
        qkv, fc = m.group(3), m.group(4)
        if qkv in ("q", "k", "v"):
            i = "qkv".index(qkv)
            out.append((layer + "attn.in_proj_weight", (i, 3), False))
        elif qkv == "out":
            out.append((layer + "attn.out_proj.weight", None, False))
        elif fc:
            out.append((layer + ("mlp.c_fc.weight" if fc == "1" else "mlp.c_proj.weight"), None, False))
    if key == "clip_g.transformer.text_projection.weight":
        out.append(("conditioner.embedders.1.model.text_projection", None, True))
    return out


class BaseWeights:
    """W0 lookups by ComfyUI model key; ``get`` returns the (sliced) float32 weight or None."""

    def __init__(self, lookup: Callable[[str], torch.Tensor | None], keys: Iterable[str] | None = None,
                 name: str = "base model"):
        self._lookup = lookup
        self._keys = set(keys) if keys is not None else None
        self.name = name
        self._fro: dict[tuple, float | None] = {}

    def _raw(self, key: str) -> torch.Tensor | None:
        for name, part, transposed in [(key, None, False), *checkpoint_candidates(key)]:
            if self._keys is not None and name not in self._keys:
                continue
            w = self._lookup(name)
            if w is None:
                continue
            if part is not None:
                i, n = part
                rows = w.shape[0] // n
                w = w[i * rows:(i + 1) * rows]
            return w.T if transposed else w
        return None

    def weight(self, target: Target) -> torch.Tensor | None:
        w = self._raw(target.key)
        if w is None:
            return None
        if target.slice is not None:
            dim, offset, length = target.slice
            w = w.narrow(dim, offset, length)
        return w.to(torch.float32)

    def fro(self, target: Target) -> float | None:
        k = (target.key, target.slice)
        if k not in self._fro:
            w = self.weight(target)
            self._fro[k] = None if w is None else float(torch.linalg.vector_norm(w.flatten().double()))
        return self._fro[k]

    def spectral(self, target: Target) -> float | None:
        w = self.weight(target)
        if w is None:
            return None
        return float(torch.linalg.matrix_norm(w.flatten(1), ord=2))


def from_file(path: str | Path) -> BaseWeights:
    """Base weights from a .safetensors checkpoint or diffusion-model file, read tensor by tensor."""
    path = Path(path)
    reader = TensorReader(path)
    return BaseWeights(lambda k: reader.tensor(k) if k in reader.infos else None, reader.infos.keys(), path.name)


def from_state_dict(sd: dict[str, torch.Tensor], name: str = "base model") -> BaseWeights:
    return BaseWeights(sd.get, sd.keys(), name)


def check_covers(base: BaseWeights, targets: list[tuple[str, Target]], architecture: str) -> None:
    """Refuse a base model that lacks the LoRA's layers or has other shapes (another architecture)."""
    missing, mismatched = [], []
    for name, t in targets:
        w = base.weight(t)
        if w is None:
            missing.append(name)
        elif t.shape is not None and t.slice is None and tuple(w.shape) != tuple(t.shape):
            mismatched.append(f"{name} {tuple(w.shape)} != {tuple(t.shape)}")
    if mismatched:
        raise ChopShopError(f"{base.name} is not a {architecture} model: {len(mismatched)} layers have other "
                            f"shapes (e.g. {'; '.join(mismatched[:3])})")
    if missing:
        raise ChopShopError(f"{base.name} lacks {len(missing)} of the {len(targets)} layers this LoRA patches "
                            f"(e.g. {', '.join(missing[:5])}); fro_ckpt needs the base weight of every layer")
