"""Reading and writing the .safetensors container, without pickle and without loading more than asked.

Reading parses the header ourselves (so a truncated or corrupt file is refused from the header alone) and
streams single tensors with positioned reads, so peak memory stays near the largest tensor asked for.
Writing produces exactly the bytes ``safetensors.torch.save`` would (same header layout, same tensor order),
streams tensors (raw bytes are copied without decoding), hashes the data section on the fly, and lands the
file atomically without ever replacing an existing one.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import struct
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .errors import ChopShopError, OutputExists, Terminated
from .safetensors_header import (DTYPE_SIZES, MAX_HEADER_BYTES, PICKLE_SUFFIXES, TensorInfo,  # noqa: F401
                                 read_header)
from .safetensors_stream import Digest, FileRange, chunks

_TORCH_DTYPE_ATTRS = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
_torch_tables: dict = {}


def __getattr__(name: str):
    """``DTYPES`` (name -> torch.dtype) and ``DTYPE_NAMES`` (torch.dtype -> name), built on first use so that
    importing this module does not import torch."""
    if name in ("DTYPES", "DTYPE_NAMES"):
        if not _torch_tables:
            import torch
            dtypes = {k: getattr(torch, a) for k, a in _TORCH_DTYPE_ATTRS.items()}
            _torch_tables.update(DTYPES=dtypes, DTYPE_NAMES={v: k for k, v in dtypes.items()})
        return _torch_tables[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# The serializer orders tensors by dtype (this rank, descending), then by name.
_DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
                "F64", "I64", "U64"]
_DTYPE_RANK = {name: i for i, name in enumerate(_DTYPE_ORDER)}
HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash")


class TensorReader:
    """Reads single tensors of one file by positioned reads (no mmap, so RSS holds only what is asked)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.infos, self.metadata, self.data_start = read_header(self.path)
        self.fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "TensorReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def raw(self, name: str) -> bytes:
        info = self.infos[name]
        data = os.pread(self.fd, info.nbytes, info.start)
        if len(data) != info.nbytes:
            raise ChopShopError(f"{self.path.name}: short read of tensor '{name}' (file changed or truncated)")
        return data

    def read_into(self, name: str, buf) -> None:
        """Read one tensor's raw bytes straight into ``buf``, a writable buffer of exactly its size."""
        info = self.infos[name]
        view = memoryview(buf).cast("B")
        if len(view) != info.nbytes:
            raise ChopShopError(f"internal error: tensor '{name}' has {info.nbytes} bytes, buffer {len(view)}")
        done = 0
        while done < info.nbytes:
            n = os.preadv(self.fd, [view[done:]], info.start + done)
            if n <= 0:
                raise ChopShopError(f"{self.path.name}: short read of tensor '{name}' (file changed or truncated)")
            done += n

    def tensor(self, name: str) -> "torch.Tensor":
        import torch
        DTYPES = __getattr__("DTYPES")
        info = self.infos[name]
        if not info.nbytes:
            return torch.empty(info.shape, dtype=DTYPES[info.dtype])
        buf = bytearray(info.nbytes)           # read straight into the tensor's own memory: no second copy
        self.read_into(name, buf)
        return torch.frombuffer(buf, dtype=DTYPES[info.dtype]).reshape(info.shape)


def tensor_bytes(t: "torch.Tensor") -> memoryview:
    """The little-endian raw bytes of a CPU tensor, as safetensors stores them."""
    import torch
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


# An entry to write: (dtype name, shape, byte count, byte source). The source is bytes-like, a callable
# returning them, or a FileRange, so large files stream and untouched tensors are copied as raw bytes.
ByteSource = bytes | bytearray | memoryview | FileRange | Callable[[], bytes | bytearray | memoryview]
Entry = tuple[str, tuple[int, ...], int, ByteSource]


def entry_from_tensor(t: "torch.Tensor") -> Entry:
    DTYPE_NAMES = __getattr__("DTYPE_NAMES")
    if t.dtype not in DTYPE_NAMES:
        raise ChopShopError(f"cannot store tensors of dtype {t.dtype}")
    return (DTYPE_NAMES[t.dtype], tuple(t.shape), t.numel() * t.element_size(), lambda: tensor_bytes(t))


def entry_from_reader(reader: TensorReader, name: str) -> Entry:
    info = reader.infos[name]
    return (info.dtype, info.shape, info.nbytes, FileRange(reader, info.start, info.end))


def serialization_order(entries: Mapping[str, Entry]) -> list[str]:
    """Tensor order of the reference serializer: dtype rank descending, then name."""
    return sorted(entries, key=lambda k: (-_DTYPE_RANK[entries[k][0]], k))


def _tensor_header(entries: Mapping[str, Entry], order: list[str]) -> str:
    tensors, offset = {}, 0
    for name in order:
        dtype, shape, nbytes, _ = entries[name]
        tensors[name] = {"dtype": dtype, "shape": [int(s) for s in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return json.dumps(tensors, ensure_ascii=False, separators=(",", ":"))[1:-1]


def header_bytes(entries: Mapping[str, Entry], order: list[str], metadata: Mapping[str, str] | None,
                 tensor_part: str | None = None) -> bytes:
    """The 8-byte length plus the JSON header (space-padded to 8), byte-identical to safetensors' own."""
    parts = []
    if metadata:
        parts.append('"__metadata__":' + json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":")))
    tensors = _tensor_header(entries, order) if tensor_part is None else tensor_part
    if tensors:
        parts.append(tensors)
    body = ("{" + ",".join(parts) + "}").encode("utf-8")
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def _unique_target(path: Path) -> None:
    if path.exists():
        raise OutputExists(f"{path}: already exists; it is never overwritten (choose another name)")


def _why(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    return e.strerror or str(e)


@contextmanager
def terminate_as_interrupt():
    """While active (main thread only), SIGTERM raises ``Terminated`` like Ctrl-C raises KeyboardInterrupt,
    so ``finally`` blocks remove half-written temporary files before the process ends."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def write_file(path: str | os.PathLike, entries: Mapping[str, Entry],
               metadata: Mapping[str, str] | None = None,
               hashes: bool = True,
               progress: Callable[[int, int], None] | None = None,
               nonfinite: Callable[[str], str] | None = None) -> dict[str, str]:
    """Write entries as a .safetensors file atomically, never replacing an existing file.

    With ``hashes`` the metadata gets ``sshs_model_hash`` / ``sshs_legacy_hash`` computed as the reference
    trainers do: over the serialization that carries only the ``ss_*`` metadata keys (its data section is
    the same bytes whatever the metadata). One pass: the header is written with placeholders of the final
    length, the data streamed and hashed, then the header rewritten in place. The file appears under its
    name only once complete (written to a temporary name, then linked), so an interrupted write leaves
    nothing behind. Returns the metadata written.

    With ``nonfinite``, float tensors are checked for NaN/Inf as they are written (the bytes checked are the
    bytes written, read once): the first that holds any stops the write, nothing is left behind, and
    ``ChopShopError(nonfinite(name))`` is raised. No fsync: the file is complete and named only once every
    byte is handed to the OS (a power cut may still lose recently written files, as with any cached write).
    """
    path = Path(path)
    _unique_target(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ChopShopError(f"{path.parent}: the output folder cannot be created ({_why(e)})") from None
    order = serialization_order(entries)
    tensor_part = _tensor_header(entries, order)
    meta = {str(k): str(v) for k, v in (metadata or {}).items() if k not in HASH_KEYS}
    win_start = None
    if hashes:
        reduced = {k: v for k, v in meta.items() if k.startswith("ss_")}
        win_start = 0x100000 - len(header_bytes(entries, order, reduced, tensor_part))
        meta.update({"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "0" * 8})
    header = header_bytes(entries, order, meta, tensor_part)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    digest = Digest(win_start, nonfinite is not None) if hashes or nonfinite else None
    try:
        with terminate_as_interrupt(), open(tmp, "wb", buffering=0) as out:
            out.write(header)
            _write_data(out, entries, order, digest, progress)
            if digest:
                hashed, bad, digest = digest.finish(), digest.bad, None
                if bad:
                    raise ChopShopError(nonfinite(bad))
                if hashed:
                    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = hashed
                    final = header_bytes(entries, order, meta, tensor_part)
                    assert len(final) == len(header)
                    out.seek(0)
                    out.write(final)
        _land(tmp, path)
    except OSError as e:
        if isinstance(e, FileExistsError):
            raise
        raise ChopShopError(f"{path}: cannot be written ({_why(e)}); nothing was written") from None
    finally:
        if digest:          # stopped early: let the second thread drain before the file goes
            try:
                digest.finish()
            except BaseException:  # noqa: BLE001 - the error already on its way out is the one to report
                pass
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return meta


def _write_data(out, entries: Mapping[str, Entry], order: list[str], digest: Digest | None,
                progress: Callable[[int, int], None] | None) -> None:
    """The data section, chunk by chunk; stops early once the digest has found NaN/Inf."""
    total, done = sum(entries[n][2] for n in order), 0
    for buf in chunks(entries, order, digest):
        _write_all(out, buf)
        done += len(buf)
        if progress:
            progress(done, total)
        if digest and digest.bad:
            return


def _write_all(out, buf) -> None:
    view = memoryview(buf).cast("B")
    while view:
        view = view[out.write(view):]


def _land(tmp: Path, path: Path) -> None:
    """Give the finished temporary file its name, failing rather than replacing an existing file."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path}: already exists; it is never overwritten (choose another name)") from None
    except OSError:
        if path.exists():
            raise OutputExists(f"{path}: already exists; it is never overwritten") from None
        os.rename(tmp, path)  # a filesystem without hard links


def unique_path(path: str | os.PathLike) -> Path:
    """``path`` if free, else ``stem-1.safetensors``, ``stem-2...``: never an existing file."""
    path = Path(path)
    if not path.exists():
        return path
    i = 1
    while True:
        cand = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not cand.exists():
            return cand
        i += 1


def load_all(path: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, "torch.Tensor"]:
    with TensorReader(path) as r:
        return {n: r.tensor(n) for n in (names if names is not None else r.infos)}
