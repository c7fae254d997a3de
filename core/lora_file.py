"""The canonical in-memory LoRA: modules with adapter type, target layer and block, over a tensor store.

``read(path)`` parses the header only; tensors are streamed on demand. Operations (chop, resize) never
mutate a ``LoraFile``: they derive a new store (added/replaced tensors, removed keys) and analyse it again.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from typing import TYPE_CHECKING

from . import adapters
from .architectures import (ARCHITECTURES, Architecture, Target, block_of, hint_strength, is_text_encoder_name,
                            may_resolve, resolve_text_encoder, resolve_unet, sort_labels)
from .errors import ChopShopError
from .keys import group_keys
from .module_checks import raw_scalar, shape_problem
from .safetensors_file import (DTYPE_SIZES, Entry, TensorReader, entry_from_reader, entry_from_tensor,
                               tensor_bytes)

if TYPE_CHECKING:  # torch is imported where tensors are touched, so header-only work runs without it
    import torch


class TensorStore:
    """Tensors by key: a base (a file reader or a dict) plus added/replaced tensors, minus removed keys."""

    def __init__(self, base: TensorReader | Mapping[str, torch.Tensor] | None = None,
                 added: Mapping[str, torch.Tensor] | None = None, removed: Iterable[str] = ()):
        self.base = base
        self.added = dict(added or {})
        self.removed = set(removed)
        base_keys = list(base.infos) if isinstance(base, TensorReader) else list(base or {})
        self._keys = [k for k in base_keys if k not in self.removed and k not in self.added] + \
            [k for k in self.added if k not in self.removed]

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self.added or (key not in self.removed and self._in_base(key))

    def _in_base(self, key: str) -> bool:
        if isinstance(self.base, TensorReader):
            return key in self.base.infos
        return self.base is not None and key in self.base

    def info(self, key: str) -> tuple[str, tuple[int, ...]]:
        """(dtype name, shape) without reading data."""
        if key in self.added:
            from .safetensors_file import DTYPE_NAMES
            t = self.added[key]
            return DTYPE_NAMES[t.dtype], tuple(t.shape)
        if isinstance(self.base, TensorReader):
            i = self.base.infos[key]
            return i.dtype, i.shape
        from .safetensors_file import DTYPE_NAMES
        t = self.base[key]
        return DTYPE_NAMES[t.dtype], tuple(t.shape)

    def nbytes(self, key: str) -> int:
        if key not in self.added and isinstance(self.base, TensorReader):
            return self.base.infos[key].nbytes
        dtype, shape = self.info(key)
        return math.prod(shape) * DTYPE_SIZES[dtype]

    def tensor(self, key: str) -> torch.Tensor:
        if key in self.added:
            return self.added[key]
        if isinstance(self.base, TensorReader):
            return self.base.tensor(key)
        return self.base[key]

    def read_into(self, key: str, out: torch.Tensor) -> None:
        """Copy one tensor into ``out`` (contiguous, same dtype and size): from a file, straight into it."""
        if key not in self.added and isinstance(self.base, TensorReader):
            return self.base.read_into(key, tensor_bytes(out))
        out.copy_(self.tensor(key).reshape(out.shape))

    def raw(self, key: str) -> tuple[str, bytes]:
        """(dtype name, little-endian raw bytes) of one tensor; straight from the file when untouched."""
        if key not in self.added and isinstance(self.base, TensorReader):
            return self.base.infos[key].dtype, self.base.raw(key)
        from .safetensors_file import DTYPE_NAMES
        t = self.tensor(key)
        return DTYPE_NAMES[t.dtype], bytes(tensor_bytes(t))

    def entry(self, key: str) -> Entry:
        """A writer entry: raw bytes straight from the file for untouched tensors (byte-identical)."""
        if key not in self.added and isinstance(self.base, TensorReader):
            return entry_from_reader(self.base, key)
        return entry_from_tensor(self.tensor(key))

    def derive(self, added: Mapping[str, torch.Tensor] | None = None, removed: Iterable[str] = ()) -> "TensorStore":
        """A new store on the same base with more changes; this one is left as it is."""
        new_added = {**self.added, **(added or {})}
        new_removed = (self.removed | set(removed)) - set(added or {})
        for k in removed:
            new_added.pop(k, None)
        return TensorStore(self.base, new_added, new_removed)

    def materialize(self) -> "TensorStore":
        """A store holding every tensor in memory (for ComfyUI values that must outlive the file)."""
        return TensorStore({k: self.tensor(k) for k in self._keys})


@dataclass(frozen=True)
class Problem:
    """Why a module cannot be used as it is. ``kind`` is one of the constants below (code branches on the
    kind, never on the text); ``text`` is the user-facing explanation."""
    kind: str
    text: str

    INCOMPLETE = "incomplete"     # a role is missing (e.g. lora_up without lora_down)
    UNRESOLVED = "unresolved"     # no layer of the architecture has this name
    SHAPE = "shape"               # the factors' ΔW does not fit the target layer
    BROKEN = "broken"             # unusable tensors (bad rank/shape, NaN/Inf, ...)

    def __str__(self) -> str:
        return self.text


@dataclass
class Module:
    """One adapted layer: its keys by role, adapter kind, target and block."""
    base: str
    roles: dict[str, str]                 # role -> original key
    family: str | None                    # up/down spelling
    kind: str                             # adapters.KIND_NAMES key
    shapes: dict[str, tuple[int, ...]]    # role -> shape
    dtypes: dict[str, str]                # role -> dtype name
    target: Target | None = None
    block: str | None = None
    component: str | None = None          # "unet", "clip_l", "clip_g", "t5xxl", "te" or None (unresolved)
    problems: list[Problem] = field(default_factory=list)

    def has_problem(self, *kinds: str) -> bool:
        return any(p.kind in kinds for p in self.problems)

    @property
    def keys(self) -> list[str]:
        return list(self.roles.values())

    @property
    def is_text_encoder(self) -> bool:
        return self.component in ("clip_l", "clip_g", "t5xxl", "te")

    @property
    def nominal_rank(self) -> int | None:
        if self.has_problem(Problem.BROKEN):
            return None
        return adapters.nominal_rank(self.kind, self.shapes)

    @property
    def dora(self) -> bool:
        return "dora_scale" in self.roles

    def rows_cols(self) -> tuple[int, int] | None:
        if self.has_problem(Problem.BROKEN):
            return None
        s = adapters.delta_shape(self.kind, self.shapes)
        return adapters.rows_cols(s) if s else None

    def delta_shape(self) -> tuple[int, ...] | None:
        """ΔW's shape: the target layer's when known (slices: rows of the slice), else the module's own."""
        if self.has_problem(Problem.BROKEN):
            return None
        own = adapters.delta_shape(self.kind, self.shapes)
        if self.target is not None and self.target.shape is not None and own is not None:
            shape = self.target.shape
            if self.target.slice is not None:
                shape = (self.target.slice[2], *shape[1:])
            if adapters.rows_cols(shape) == adapters.rows_cols(own):
                return tuple(shape)
        return own


def _shape_fits(module_rc: tuple[int, int] | None, target: Target) -> bool:
    if module_rc is None or target.shape is None:
        return True
    rows = target.slice[2] if target.slice is not None else target.shape[0]
    return module_rc == (rows, math.prod(target.shape[1:]) if len(target.shape) > 1 else 1)


@dataclass
class LoraFile:
    """A LoRA: its modules (model order of the file), pass-through keys and metadata, over a tensor store."""
    store: TensorStore
    metadata: dict[str, str]
    modules: list[Module]
    unknown_keys: list[str]
    architecture: str                     # an ARCHITECTURES id or "unknown"
    format: str
    formats: dict[str, int]
    source: Path | None = None
    name: str = "lora"

    @property
    def arch(self) -> Architecture | None:
        return ARCHITECTURES.get(self.architecture)

    def blocks(self) -> list[str]:
        """Labels of the blocks present, in model order (numeric)."""
        return sort_labels(m.block for m in self.modules if m.block)

    def module_tensors(self, m: Module, dtype: "torch.dtype | None | str" = "float32",
                       device: "str | torch.device | None" = None) -> dict[str, "torch.Tensor"]:
        import torch
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        out = {}
        for role, key in m.roles.items():
            t = self.store.tensor(key)
            if dtype is not None and t.is_floating_point():
                t = t.to(device=device, dtype=dtype)
            out[role] = t
        return out

    def alpha(self, m: Module) -> float | None:
        if "alpha" not in m.roles:
            return None
        key = m.roles["alpha"]
        count = math.prod(self.store.info(key)[1])
        if count != 1:
            raise ChopShopError(f"{m.base}: alpha has {count} values, expected one")
        value = raw_scalar(*self.store.raw(key))      # a float scalar straight from its bytes: no torch call
        return float(self.store.tensor(key).reshape(-1)[0]) if value is None else value

    def gamma(self, m: Module) -> float:
        return adapters.gamma(m.kind, m.shapes, self.alpha(m))

    def total_bytes(self) -> int:
        return sum(self.store.nbytes(k) for k in self.store.keys())

    def close(self) -> None:
        """Close the file this LoRA reads from (if any); in-memory LoRAs have nothing to close."""
        base = self.store.base
        if isinstance(base, TensorReader):
            base.close()

    def __enter__(self) -> "LoraFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def derive(self, store: TensorStore, metadata: dict[str, str] | None = None,
               same_modules: bool = False) -> "LoraFile":
        """A new LoraFile over ``store``, analysed for the same architecture. With ``same_modules`` (an
        operation that only removed whole modules or rewrote tensors in place, like chop) the surviving
        modules are taken over instead of analysing the store again."""
        meta = self.metadata if metadata is None else metadata
        if not same_modules:
            return analyse(store, meta, self.source, self.name, architecture=self.architecture)
        keys = set(store.keys())
        modules = [m for m in self.modules if all(k in keys for k in m.keys)]
        return LoraFile(store, dict(meta), modules, [k for k in self.unknown_keys if k in keys], self.architecture,
                        self.format, dict(self.formats), self.source, self.name)


def naming_style(base: str, family: str | None, arch_id: str) -> str:
    """The trainer naming convention a module name follows (docs/formats.md §4.1)."""
    if family in ("diffusers_processor", "diffusers_lora", "diffusers_linear_layer"):
        return "diffusers-old"
    if family == "xlabs":
        return "xlabs"
    if family == "control":
        return "control-lora"
    if family == "peft_default":
        return "diffsynth" if not base.startswith(("transformer.", "diffusion_model.", "unet.")) else "peft"
    if base.startswith("lycoris_"):
        return "simpletuner-lycoris"
    if base.startswith("lora_transformer_"):
        return "onetrainer"
    if base.startswith(("lora_unet_", "lora_te")):
        return "musubi" if arch_id in ("hunyuan_video", "wan21_1_3b", "wan21_14b", "qwen_image", "z_image") \
            and base.startswith("lora_unet_") else "kohya"
    if base.startswith(("diffusion_model.", "text_encoders.")):
        return "ai-toolkit" if family in ("peft", "peft_bare") else "comfyui"
    if base.startswith(("transformer.", "unet.", "text_encoder", "base_model.")):
        return "peft"
    return "peft" if family in ("peft", "peft_bare") else "other"


def _detect(groups, shapes_of, metadata, ndim_of=lambda b: None) -> str:
    """The architecture whose layers the most diffusion-model modules resolve to with a fitting shape.

    Ties (the same modules fit several models: a Flux LoRA without modulation layers also fits Chroma, Flux
    blocks 0-18 also fit HunyuanVideo, SD3.5 Medium without ``attn2`` fits SD3 Medium) go to the model the
    training metadata names most specifically, else to the first in ``ARCHITECTURES`` order (the commoner
    model: Flux before Chroma and HunyuanVideo, SD3 Medium before SD3.5 Medium)."""
    bases = [b for b in groups if not is_text_encoder_name(b)]
    if not bases:
        te = [b for b in groups if is_text_encoder_name(b)]
        return "unknown" if not te else ("sdxl" if any(b.startswith(("lora_te2_", "text_encoder_2.")) for b in te)
                                         else "unknown")
    best, best_score = "unknown", (0, 0, 0)
    for arch in ARCHITECTURES.values():
        fit = exact = 0
        probe = bases[:: max(1, len(bases) // 24)]  # cheap early-out for models none of a sample resolves in
        if not may_resolve(arch, probe) or not any(resolve_unet(arch, b) is not None for b in probe):
            continue
        for b in bases:
            t = resolve_unet(arch, b)
            if t is not None and _shape_fits(shapes_of(b), t):
                fit += 1
                # factors of the layer's own rank (2-D for a Linear, 4-D for a conv) break ties such as
                # SD1.5's 1x1-conv proj_in versus SDXL's Linear proj_in
                exact += int(t.shape is not None and ndim_of(b) == len(t.shape))
        score = (fit, hint_strength(arch, metadata), exact)
        if fit and score > best_score:
            best, best_score = arch.id, score
    return best


def analyse(store: TensorStore, metadata: Mapping[str, str] | None, source: Path | None = None,
            name: str = "lora", architecture: str | None = None) -> LoraFile:
    """Group the store's keys into modules, detect the architecture and resolve every module."""
    keys = store.keys()
    groups, unknown = group_keys(keys)
    infos = {k: store.info(k) for k in keys}
    modules: list[Module] = []
    bad: list[str] = []
    for base, g in groups.items():
        shapes = {r: infos[k][1] for r, k in g.roles.items()}
        try:
            kind = adapters.classify(shapes)
        except ChopShopError:
            bad += g.roles.values()
            continue
        m = Module(base, dict(g.roles), g.family, kind, shapes, {r: infos[k][0] for r, k in g.roles.items()})
        missing = adapters.missing_roles(kind, g.roles)
        if missing:
            m.problems.append(Problem(Problem.INCOMPLETE,
                                      f"incomplete {adapters.KIND_NAMES[kind]} module: missing {', '.join(missing)}"))
        broken = shape_problem(kind, shapes)
        if broken:
            m.problems.append(Problem(Problem.BROKEN, f"broken module: {broken}"))
        modules.append(m)
    unknown += bad
    by_base = {m.base: m for m in modules}
    arch_id = architecture or _detect(
        groups, lambda b: by_base[b].rows_cols() if b in by_base else None, metadata,
        lambda b: len(s) if b in by_base and (s := by_base[b].delta_shape()) else None)
    arch = ARCHITECTURES.get(arch_id)
    for m in modules:
        if is_text_encoder_name(m.base):
            t = resolve_text_encoder(arch, m.base)
            m.target, m.component = t, (t.component if t else "te")
            if t is None:
                m.problems.append(Problem(Problem.UNRESOLVED,
                                          "text-encoder layer not found in the known encoders (kept as text encoder)"))
            elif not _shape_fits(m.rows_cols(), t):
                m.problems.append(Problem(Problem.SHAPE, f"shape {m.rows_cols()} does not fit {t.key} {t.shape}"))
            continue
        t = resolve_unet(arch, m.base) if arch is not None else None
        if t is None:
            m.problems.append(Problem(Problem.UNRESOLVED, "no layer of the detected architecture has this name"))
            continue
        if not _shape_fits(m.rows_cols(), t):
            m.problems.append(Problem(Problem.SHAPE, f"shape {m.rows_cols()} does not fit {t.key} {t.shape}"))
        m.target, m.component = t, "unet"
        m.block = block_of(arch, t.key)
    styles = Counter(naming_style(m.base, m.family, arch_id) for m in modules)
    # The diffusion model's names tell the trainer; text-encoder prefixes (lora_te1_ ...) are shared by
    # kohya, OneTrainer and others, so they only decide for text-encoder-only files.
    main = Counter(naming_style(m.base, m.family, arch_id) for m in modules if not m.is_text_encoder)
    fmt = (main or styles).most_common(1)[0][0] if styles else "unknown"
    return LoraFile(store, dict(metadata or {}), modules, unknown, arch_id, fmt, dict(styles), source, name)


def read(path: str | os.PathLike) -> LoraFile:
    """Open a LoRA .safetensors file (header only; tensors are read on demand)."""
    path = Path(path)
    reader = TensorReader(path)
    try:
        return _checked(analyse(TensorStore(reader), reader.metadata, path, path.stem), reader)
    except BaseException:
        reader.close()
        raise


def _checked(lora: LoraFile, reader: TensorReader) -> LoraFile:
    path = lora.source
    if not reader.infos:
        raise ChopShopError(f"{path.name}: the file holds no tensors")
    if not lora.modules:
        raise ChopShopError(
            f"{path.name}: no LoRA tensors found ({len(reader.infos)} tensors, none named like an adapter: "
            "expected keys such as '<module>.lora_down.weight', '.lora_A.weight', '.hada_w1_a', '.lokr_w1', "
            "'.diff'); is this a checkpoint rather than a LoRA?")
    return lora


def from_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 name: str = "lora") -> LoraFile:
    """A LoraFile over an in-memory state dict (e.g. ComfyUI's LORA_MODEL)."""
    lora = analyse(TensorStore(dict(tensors)), metadata, None, name)
    if not lora.modules:
        raise ChopShopError(f"{name}: no LoRA tensors found among {len(tensors)} tensors")
    return lora
