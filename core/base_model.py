"""Base-model weights for the checkpoint-relative rank rules (``fro_ckpt``, ``spn_ckpt``).

A ``BaseWeights`` answers "the base weight W0 of this target" from any source: a single-file checkpoint
or a diffusion-model file (CLI), or ComfyUI's loaded MODEL/CLIP state dicts (nodes). Checkpoint names are
mapped from ComfyUI's model keys, including SDXL's OpenCLIP-format CLIP-G (``in_proj_weight`` packed
``[q; k; v]``, sliced in that order — elias's mapper gets it wrong, docs/resize.md §8).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import torch

from .architectures import Target
from .errors import ChopShopError
from .norm_cache import NormCache, file_fingerprint
from .safetensors_file import TensorReader

CHUNK = 1 << 20   # elements per float32 chunk of a norm: 4 MiB of scratch, never a whole-tensor copy
ROW = 256

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
    """W0 lookups by ComfyUI model key; ``weight`` returns the (sliced) weight in its stored dtype or None.
    ``norms`` reads each needed tensor once and caches ‖W0‖_F (and σ_max) in ``cache`` when one is set."""

    def __init__(self, lookup: Callable[[str], torch.Tensor | None], keys: Iterable[str] | None = None,
                 name: str = "base model", cache: NormCache | None = None):
        self._lookup = lookup
        self._keys = set(keys) if keys is not None else None
        self.name = name
        self.cache = cache

    def resolve(self, key: str) -> tuple[str, tuple[int, int] | None, bool] | None:
        """(stored name, (part, parts) or None, transposed) of a ComfyUI model key, or None."""
        for name, part, transposed in [(key, None, False), *checkpoint_candidates(key)]:
            if self._keys is None or name in self._keys:
                if self._keys is not None or self._lookup(name) is not None:
                    return name, part, transposed
        return None

    def _cut(self, w: torch.Tensor, where, target: Target) -> torch.Tensor:
        _, part, transposed = where
        if w.ndim == 0:
            raise ChopShopError(f"{self.name}: tensor for {target.key} is a scalar, not a weight matrix")
        if part is not None:
            i, n = part
            rows = w.shape[0] // n
            w = w[i * rows:(i + 1) * rows]
        w = w.T if transposed else w
        if target.slice is not None:
            dim, offset, length = target.slice
            w = w.narrow(dim, offset, length)
        return w

    def weight(self, target: Target) -> torch.Tensor | None:
        where = self.resolve(target.key)
        if where is None:
            return None
        w = self._lookup(where[0])
        return None if w is None else self._cut(w, where, target).to(torch.float32)

    def norms(self, targets: list[Target], architecture: str = "unknown",
              spectral: bool = False) -> dict[tuple, tuple[float | None, float | None]]:
        """(‖W0‖_F, σ_max(W0) or None) by (key, slice) for every target; refuses a base model that lacks
        a layer or has other shapes. Each stored tensor is read at most once (q, k, v slices share it)."""
        wanted = {(t.key, t.slice): t for t in targets}
        out, todo, missing = {}, {}, []
        for ks, t in wanted.items():
            hit = self.cache.get(ks, spectral) if self.cache is not None else None
            where = self.resolve(t.key) if hit is None else None
            if hit is not None:
                out[ks] = hit
            elif where is None:
                missing.append(t.key)
            else:
                todo.setdefault(where[0], []).append((ks, t, where))
        mismatched = []
        with ThreadPoolExecutor(2) as pool:     # reads and reductions release the GIL: both cores work
            for found, bad in pool.map(lambda item: self._stored_norms(*item, spectral), todo.items()):
                out.update(found)
                mismatched += bad
        _refuse(self.name, architecture, len(wanted), missing, mismatched)
        if self.cache is not None and todo:
            self.cache.update({ks: out[ks] for items in todo.values() for ks, _, _ in items})
        return out

    def _stored_norms(self, name: str, items: list, spectral: bool) -> tuple[dict, list[str]]:
        """Norms of the targets that share the stored tensor ``name`` (read once), and shape mismatches."""
        raw = self._lookup(name)
        found, bad = {}, []
        for ks, t, where in items:
            w = self._cut(raw, where, t)
            if t.shape is not None and t.slice is None and tuple(w.shape) != tuple(t.shape):
                bad.append(f"{t.key} {tuple(w.shape)} != {tuple(t.shape)}")
                continue
            found[ks] = (frobenius(w), spectral_norm(w) if spectral else None)
        return found, bad


def frobenius(w: torch.Tensor) -> float:
    """‖w‖_F in float32 over chunks of CHUNK elements (float32 sums of ROW squares), the chunks'
    squares summed in float64: no whole-tensor float64 (or float32) copy; error ~1e-7 relative."""
    flat = w.reshape(-1)
    total = 0.0
    for i in range(0, flat.numel(), CHUNK):
        c = flat[i:i + CHUNK].to(torch.float32)
        c = c * c
        n = c.numel() // ROW * ROW               # short float32 sums of ROW squares, then float64 over rows
        total += float(c[:n].view(-1, ROW).sum(1).double().sum()) + float(c[n:].double().sum())
    return total ** 0.5


def spectral_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).to(torch.float32), ord=2))


def _refuse(name: str, architecture: str, n: int, missing: list[str], mismatched: list[str]) -> None:
    if mismatched:
        raise ChopShopError(f"{name} is not a {architecture} model: {len(mismatched)} layers have other "
                            f"shapes (e.g. {'; '.join(mismatched[:3])})")
    if missing:
        raise ChopShopError(f"{name} lacks {len(missing)} of the {n} layers this LoRA patches "
                            f"(e.g. {', '.join(missing[:5])}); fro_ckpt needs the base weight of every layer")


def from_file(path: str | Path, cache_dir: str | Path | None = None, use_cache: bool = True) -> BaseWeights:
    """Base weights from a .safetensors checkpoint or diffusion-model file, read tensor by tensor, with a
    norm cache keyed by the file's fingerprint (default folder ``~/.cache/chopshop/norms``)."""
    path = Path(path)
    reader = TensorReader(path)
    cache = NormCache.for_file(file_fingerprint(path, reader), cache_dir) if use_cache else None
    return BaseWeights(lambda k: reader.tensor(k) if k in reader.infos else None, reader.infos.keys(), path.name,
                       cache)


def from_state_dict(sd: dict[str, torch.Tensor], name: str = "base model") -> BaseWeights:
    return BaseWeights(sd.get, sd.keys(), name)


def check_covers(base: BaseWeights, targets: list[tuple[str, Target]], architecture: str) -> None:
    """Refuse a base model that lacks the LoRA's layers or has other shapes (another architecture)."""
    base.norms([t for _, t in targets], architecture)
