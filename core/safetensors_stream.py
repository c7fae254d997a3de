"""The data section of a .safetensors file being written, as a stream of chunks: read, checked, hashed.

Untouched tensors are copied as raw byte ranges of their file: tensors contiguous in the source are read
together, in chunks of whole tensors (a tensor larger than a chunk is split at element boundaries), into a
few reusable buffers (fresh buffers per read cost more in page faults than the copy itself). Each chunk is
handed to ``Hasher`` (SHA-256 on a second thread: hashlib releases the GIL) and, when asked, checked for
NaN/Inf on its raw exponent bits before the caller writes it, so the bytes checked are the bytes written
and the file is read once.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from .errors import ChopShopError
from .module_checks import raw_nonfinite

CHUNK = 4 << 20     # small enough to stay in cache between the read, the check, the hash and the write
BUFFERS = 3         # chunks in flight: one being read and checked, up to two waiting for the hasher


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, end)`` of a reader's file: copied (and hashed) without being decoded."""
    reader: object      # a safetensors_file.TensorReader (its ``fd`` and ``path``)
    start: int
    end: int


class Hasher:
    """SHA-256 of the data section on a second thread, plus the 64 KiB window of the legacy hash."""

    def __init__(self, win_start: int):
        self.sha = hashlib.sha256()
        self.win_start, self.window, self.pos = win_start, bytearray(), 0
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while (item := self.queue.get()) is not None:
            buf, done = item
            self.sha.update(buf)
            if done is not None:
                done()

    def feed(self, buf, done: Callable[[], None] | None = None) -> None:
        """Hash ``buf`` (not to be changed until ``done`` is called, after it is hashed)."""
        n = len(buf)
        lo, hi = max(self.win_start, self.pos), min(self.win_start + 0x10000, self.pos + n)
        if lo < hi:
            self.window += memoryview(buf)[lo - self.pos:hi - self.pos]
        self.pos += n
        self.queue.put((buf, done))

    def finish(self) -> tuple[str, str]:
        self.queue.put(None)
        self.thread.join()
        return self.sha.hexdigest(), hashlib.sha256(bytes(self.window)).hexdigest()[:8]


def _read_into(fd: int, view: memoryview, pos: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], pos)
    data = os.pread(fd, len(view), pos)
    view[:len(data)] = data
    return len(data)


def _plan(entries: Mapping[str, tuple], order: list[str]):
    """The data section as pieces: ``("file", reader, start, end, segments)`` (a chunk of one file, at most
    CHUNK bytes unless one tensor alone is larger) or ``("memory", name, dtype, source)``. ``segments``:
    ``(name, dtype, offset in the chunk, byte count)`` of each tensor or piece of tensor in the chunk."""
    chunk = None
    for name in order:
        dtype, _, nbytes, src = entries[name]
        if isinstance(src, FileRange):
            size = src.end - src.start
            if chunk and (chunk[1] is not src.reader or chunk[3] != src.start or chunk[3] - chunk[2] + size > CHUNK):
                yield tuple(chunk)
                chunk = None
            if size > CHUNK:
                for off in range(0, size, CHUNK):   # CHUNK is a multiple of every element size
                    n = min(CHUNK, size - off)
                    yield ("file", src.reader, src.start + off, src.start + off + n, [(name, dtype, 0, n)])
                continue
            if chunk is None:
                chunk = ["file", src.reader, src.start, src.start, []]
            chunk[4].append((name, dtype, chunk[3] - chunk[2], size))
            chunk[3] = src.end
            continue
        if chunk:
            yield tuple(chunk)
            chunk = None
        yield ("memory", name, dtype, src)
    if chunk:
        yield tuple(chunk)


def _refuse_nonfinite(view, segments, message: Callable[[str], str]) -> None:
    """Check runs of same-dtype tensors at once; on a hit, find the tensor and raise naming it."""
    i = 0
    while i < len(segments):
        j = i + 1
        while j < len(segments) and segments[j][1] == segments[i][1]:
            j += 1
        start, end = segments[i][2], segments[j - 1][2] + segments[j - 1][3]
        if raw_nonfinite(segments[i][1], view[start:end]):
            for name, dtype, off, n in segments[i:j]:
                if raw_nonfinite(dtype, view[off:off + n]):
                    raise ChopShopError(message(name))
        i = j


def chunks(entries: Mapping[str, tuple], order: list[str], hasher: Hasher | None = None,
           nonfinite: Callable[[str], str] | None = None):
    """The data section as byte chunks, in order, each already handed to ``hasher``; with ``nonfinite``,
    a float tensor holding NaN or Inf raises ``ChopShopError(nonfinite(name))`` before it is yielded.
    A yielded chunk must be consumed (written) before the next is asked for."""
    free = threading.Semaphore(BUFFERS)
    pool = [bytearray(CHUNK) for _ in range(BUFFERS)]
    turn = 0
    for piece in _plan(entries, order):
        if piece[0] == "memory":
            _, name, dtype, src = piece
            buf = src() if callable(src) else src
            if len(buf) != entries[name][2]:
                raise ChopShopError(f"internal error: tensor '{name}' has {len(buf)} bytes, "
                                    f"expected {entries[name][2]}")
            if nonfinite and len(buf) and raw_nonfinite(dtype, buf):
                raise ChopShopError(nonfinite(name))
            if hasher:
                hasher.feed(buf)
            yield buf
            continue
        _, reader, start, end, segments = piece
        n = end - start
        free.acquire()
        buf = pool[turn] if n <= CHUNK else bytearray(n)
        turn = (turn + 1) % BUFFERS
        view = memoryview(buf)[:n]
        if _read_into(reader.fd, view, start) != n:
            free.release()
            raise ChopShopError(f"{reader.path.name}: short read (file changed or truncated)")
        if nonfinite:
            _refuse_nonfinite(view, segments, nonfinite)
        if hasher:
            hasher.feed(view, free.release)
        else:
            free.release()
        yield view
