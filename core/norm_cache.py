"""A cache of base-model norms per checkpoint file, so a second LoRA on the same base reads no weights.

The key is a fingerprint of the file: SHA-256 of its safetensors header (names, dtypes, shapes, offsets,
metadata) plus its size and modification time — a hash of the whole file would read every weight, which is
what the cache exists to avoid. One JSON file per fingerprint under ``~/.cache/chopshop/norms`` (or the
folder given; ``CHOPSHOP_CACHE`` overrides the root), written atomically; a damaged cache file is ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def file_fingerprint(path: Path, reader) -> str:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(reader.data_start))
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def default_dir() -> Path:
    root = os.environ.get("CHOPSHOP_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "chopshop") / "norms"


def _key(ks: tuple) -> str:
    key, sl = ks
    return key if sl is None else f"{key}#{','.join(map(str, sl))}"


class NormCache:
    """(key, slice) -> (fro, spectral or None); ``update`` merges and saves."""

    def __init__(self, file: Path):
        self.file = file
        try:
            self.data = json.loads(file.read_text())
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}

    @classmethod
    def for_file(cls, fingerprint: str, folder: str | os.PathLike | None = None) -> "NormCache":
        return cls(Path(folder or default_dir()) / f"{fingerprint[:32]}.json")

    def get(self, ks: tuple, spectral: bool) -> tuple[float | None, float | None] | None:
        v = self.data.get(_key(ks))
        if not isinstance(v, list) or len(v) != 2 or (spectral and v[1] is None):
            return None
        return (None if v[0] is None else float(v[0]), None if v[1] is None else float(v[1]))

    def update(self, values: dict) -> None:
        for ks, (fro, spn) in values.items():
            old = self.data.get(_key(ks))
            if spn is None and isinstance(old, list) and len(old) == 2:
                spn = old[1]
            self.data[_key(ks)] = [fro if fro == fro else None, spn]
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".norms-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.file)
        except OSError:
            pass  # a cache that cannot be written only costs time
