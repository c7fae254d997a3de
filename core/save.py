"""Writing a LoraFile: default output names, provenance metadata, atomic never-overwriting writes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from .lora_file import LoraFile, TensorStore
from .safetensors_file import HASH_KEYS, unique_path, write_file

PROVENANCE_KEY = "chopshop"


def default_output(source: Path | None, suffix: str, name: str = "lora") -> Path:
    """``<stem>-<suffix>.safetensors`` beside the source; a counter is added when that name is taken."""
    folder = source.parent if source is not None else Path.cwd()
    stem = source.stem if source is not None else name
    return unique_path(folder / f"{stem}-{suffix}.safetensors")


def with_provenance(metadata: dict[str, str], step: dict) -> dict[str, str]:
    """A copy of ``metadata`` that records ``step`` (appended to the pack's history) and drops stale hashes."""
    meta = dict(metadata)
    try:
        history = json.loads(meta.get(PROVENANCE_KEY, "[]"))
        if not isinstance(history, list):
            history = [history]
    except json.JSONDecodeError:
        history = []
    step = dict(step)
    for k in HASH_KEYS:
        if k in metadata:
            step.setdefault("source_" + k, metadata[k])
    history.append(step)
    meta[PROVENANCE_KEY] = json.dumps(history, separators=(",", ":"))
    meta.pop("modelspec.hash_sha256", None)  # stale after any edit
    return meta


def save(lora: LoraFile, path: str | os.PathLike,
         progress: Callable[[int, int], None] | None = None,
         nonfinite: Callable[[str], str] | None = None) -> tuple[Path, dict[str, str]]:
    """Write ``lora`` to ``path`` (never replacing a file); returns the path and the metadata written
    (with the recomputed ``sshs_*`` hashes). ``nonfinite``: see ``write_file`` (NaN/Inf refused while
    writing, with the message it gives for the tensor's key)."""
    return save_store(lora.store, lora.metadata, path, progress, nonfinite)


def save_store(store: TensorStore, metadata: dict[str, str], path: str | os.PathLike,
               progress: Callable[[int, int], None] | None = None,
               nonfinite: Callable[[str], str] | None = None) -> tuple[Path, dict[str, str]]:
    """``save`` of a tensor store and its metadata (no LoraFile, so no module analysis of the output)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        from .errors import ChopShopError
        raise ChopShopError(f"{path.name}: output must end in .safetensors")
    entries = {k: store.entry(k) for k in store.keys()}
    meta = write_file(path, entries, metadata, hashes=True, progress=progress, nonfinite=nonfinite)
    return path, meta
