"""The .safetensors header: read and checked as strictly as the format's own loader, without importing torch.

A file is refused with one clear message when its path is no regular file (missing, a directory, a FIFO, a
device), when it is a pickle, or when its header is malformed: a length past the file or over the 100 MiB
cap, bad UTF-8 or JSON, duplicate keys, deeply nested JSON, an unknown dtype, shapes or offsets that are not
whole numbers >= 0 (``true``, ``1e400``, ``-1``, ``"4"``, ``0.0``), or tensors that do not tile the data
section exactly (overlaps, gaps, trailing bytes, sizes that disagree with shape x dtype).
"""
from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from . import strict_json
from .errors import ChopShopError

MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pt2"}

# Bytes per element of each safetensors dtype name; known without importing torch, so headers are read
# and checked (and raw bytes copied) before torch is imported.
DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a file: dtype name ("F16"), shape, absolute byte range."""
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ChopShopError(
            f"{path.name}: '{path.suffix}' files are pickles and are never loaded (they can run code); "
            "convert the LoRA to .safetensors first")


def _check_path(path: Path) -> int:
    """The file's size, after refusing pickles and anything that is not a readable regular file."""
    _refuse_pickle(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ChopShopError(f"{path}: no such file") from None
    except OSError as e:
        raise ChopShopError(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ChopShopError(f"{path}: is a directory, not a .safetensors file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else \
            "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else \
            "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
        raise ChopShopError(f"{path}: is {kind}, not a regular .safetensors file")
    return st.st_size


def _read_raw_header(path: Path, size: int) -> bytes:
    """The JSON bytes of the header, after checking the 8-byte length against the cap and the file size."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ChopShopError(f"{path.name}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            # A valid safetensors length can begin with the same bytes as a pickle (640 = 80 02 ...): the
            # signature only names the problem once the length does not fit.
            looks_pickled = head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05" or head[:4] == b"PK\x03\x04"
            if looks_pickled and (n > MAX_HEADER_BYTES or n < 2 or 8 + n > size or f.read(1) != b"{"):
                raise ChopShopError(f"{path.name}: a pickled (torch.save) file named .safetensors; it is never "
                                    "loaded (pickles can run code); convert the LoRA to real .safetensors")
            f.seek(8)
            if n > MAX_HEADER_BYTES:
                raise ChopShopError(
                    f"{path.name}: the header claims {n} bytes, more than the {MAX_HEADER_BYTES >> 20} MiB a "
                    "safetensors header may have; the file is corrupt or of another format")
            if n < 2 or 8 + n > size:
                raise ChopShopError(
                    f"{path.name}: not a valid safetensors file (header length {n} does not fit a file of "
                    f"{size} bytes); the file is truncated, corrupt or of another format")
            return f.read(n)
    except PermissionError as e:
        raise ChopShopError(f"{path}: cannot be read ({e.strerror})") from None


def _parse_json(name: str, raw: bytes) -> dict:
    """The header as a dict; refuses what the format's own loader refuses (bad UTF-8 or JSON, a header that
    is no object, duplicate keys, JSON nested too deeply to parse)."""
    if not raw.lstrip(b" ").startswith(b"{"):
        raise ChopShopError(f"{name}: corrupt safetensors header (it must be a JSON object starting with '{{')")
    try:
        header = strict_json.loads(raw)
    except strict_json.StrictJSONError as e:
        raise ChopShopError(f"{name}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ChopShopError(f"{name}: corrupt safetensors header (not a JSON object)")
    return header


def _whole(v) -> bool:
    """A JSON whole number >= 0 (not a bool, not a float such as 0.0 or 1e400)."""
    return type(v) is int and v >= 0


def _entry(name: str, key: str, entry, data_start: int) -> TensorInfo:
    """One tensor's TensorInfo, its dtype, shape and offsets checked for type and sign."""
    bad = f"{name}: corrupt safetensors header entry for {key!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ChopShopError(f"{bad} (needs dtype, shape and data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise ChopShopError(f"{name}: tensor {key!r} has unsupported dtype {dtype!r}; "
                            f"valid: {', '.join(DTYPE_SIZES)}")
    if not isinstance(shape, list) or not all(_whole(s) for s in shape):
        raise ChopShopError(f"{bad} (shape {shape!r} must be a list of whole numbers >= 0)")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
        raise ChopShopError(f"{bad} (data_offsets {offsets!r} must be two whole numbers >= 0)")
    return TensorInfo(dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])


def _entries(name: str, header: dict, data_start: int) -> dict[str, TensorInfo]:
    """Every tensor's TensorInfo: one quick test per well-formed entry, ``_entry`` (checks and messages)
    for any other."""
    infos = {}
    for key, entry in header.items():
        try:
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
            a, b = offsets
            ok = type(entry) is dict and type(dtype) is str and dtype in DTYPE_SIZES and type(shape) is list \
                and type(offsets) is list and type(a) is int and type(b) is int and a >= 0 and b >= 0 \
                and set(map(type, shape)) <= _INT and (not shape or min(shape) >= 0)
        except (TypeError, KeyError, ValueError):
            ok = False
        infos[key] = TensorInfo(dtype, tuple(shape), data_start + a, data_start + b) if ok else \
            _entry(name, key, entry, data_start)
    return infos


_INT = {int}


def _check_layout(name: str, infos: dict[str, TensorInfo], data_start: int, size: int) -> None:
    """Tensors must tile the data section exactly, as the format's loader requires: sorted by offset each
    starts where the previous ended (no gap, no overlap), holds shape x dtype bytes, and the last ends at the
    end of the file."""
    pos = data_start
    for key, info in sorted(infos.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        start, end = info.start, info.end
        if start != pos or end > size or end - start != math.prod(info.shape) * DTYPE_SIZES[info.dtype]:
            _layout_error(name, key, info, pos, data_start, size)
        pos = end
    if pos != size:
        raise ChopShopError(f"{name}: {size - pos} bytes after the last tensor belong to no tensor; the file is "
                            "corrupt or was appended to")


def _layout_error(name: str, key: str, info: TensorInfo, pos: int, data_start: int, size: int) -> None:
    """Raise the message for the first layout rule ``info`` breaks."""
    if info.end < info.start:
        raise ChopShopError(f"{name}: tensor {key!r} ends before it starts (data_offsets "
                            f"[{info.start - data_start}, {info.end - data_start}]); the file is corrupt")
    if info.end > size:
        raise ChopShopError(f"{name}: tensor {key!r} lies outside the file ({info.end} > {size} bytes) or has "
                            "a wrong size; the file is truncated or corrupt")
    if info.start != pos:
        what = "overlaps the tensor before it" if info.start < pos else "leaves a gap before it"
        raise ChopShopError(f"{name}: tensor {key!r} {what} (starts at byte {info.start - data_start} of the "
                            f"data, expected {pos - data_start}); the file is corrupt")
    if info.nbytes != info.numel * DTYPE_SIZES[info.dtype]:
        raise ChopShopError(f"{name}: tensor {key!r} has {info.nbytes} bytes but shape {list(info.shape)} "
                            f"of {info.dtype} needs {info.numel * DTYPE_SIZES[info.dtype]}; the file is corrupt")


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str] | None, int]:
    """Parse the header of a .safetensors file: ``({name: TensorInfo}, metadata or None, data_start)``.

    Validates everything the format's own loader does (header size and cap, UTF-8 JSON object without
    duplicate keys, dtypes, whole-number shapes and offsets, tensors tiling the data section exactly), so a
    truncated, corrupt or malformed file fails here with one clear message, without importing torch.
    """
    path = Path(path)
    size = _check_path(path)
    raw = _read_raw_header(path, size)
    key = (path.name, size, raw)
    if _last and _last[0] == key:   # the same header bytes again (the CLI checks, then reads): parsed once
        infos, metadata, data_start = _last[1]
        return dict(infos), dict(metadata) if metadata is not None else None, data_start
    header = _parse_json(path.name, raw)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise ChopShopError(f"{path.name}: corrupt safetensors metadata (values must be strings)")
    data_start = 8 + len(raw)
    infos = _entries(path.name, header, data_start)
    _check_layout(path.name, infos, data_start, size)
    _last[:] = [key, (dict(infos), dict(metadata) if metadata is not None else None, data_start)]
    return infos, metadata, data_start


# The last header parsed, by file name, size and raw header bytes: parsing is a function of these alone, so
# a second read of an unchanged header returns copies of the same result.
_last: list = []
