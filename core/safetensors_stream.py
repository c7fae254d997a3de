"""The data section of a .safetensors file being written, as a stream of chunks: read, checked, hashed.

Untouched tensors are copied as raw byte ranges of their file: tensors contiguous in the source are read
together, in chunks of whole tensors (a tensor larger than a chunk is split at element boundaries), into a
few reusable buffers (fresh buffers per read cost more in page faults than the copy itself). Each chunk is
handed to ``Digest``, a second thread that checks it for NaN/Inf (on the raw exponent bits, without numpy)
and hashes it (hashlib releases the GIL) while the caller writes it: the bytes checked and hashed are the
bytes written, and the file is read once. A buffer is reused only once the digest is done with it.
"""
from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from .errors import ChopShopError
from .module_checks import bytes_nonfinite, raw_nonfinite

CHUNK = 1 << 20     # larger writes can cost ten times more kernel time (see bench/README.md, "Chop")
BUFFERS = 3         # chunks in flight: one being read and written, up to two waiting for the digest
SMALL = 64 << 10    # in-memory tensors below this are gathered into shared chunks


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, end)`` of a reader's file: copied (and hashed) without being decoded."""
    reader: object      # a safetensors_file.TensorReader (its ``fd`` and ``path``)
    start: int
    end: int


class Digest:
    """Beside the writer, in order: each chunk's NaN/Inf check (``check``) and the SHA-256 of the data section
    with the 64 KiB window of the legacy hash (``win_start``; None: no hashes), each on a thread of its own
    (hashlib releases the GIL, so the hash runs beside the check and the writes). ``bad`` becomes the name
    of the first tensor found holding NaN or Inf."""

    def __init__(self, win_start: int | None, check: bool):
        self.sha = hashlib.sha256() if win_start is not None else None
        self.check, self.bad, self.error = check, None, None
        self.win_start, self.window, self.pos = win_start or 0, bytearray(), 0
        self.lock = threading.Lock()
        self.queues = [(queue.Queue(maxsize=8), work) for work, wanted in
                       ((self._check, check), (self._hash, self.sha is not None)) if wanted]
        self.threads = [threading.Thread(target=self._run, args=qw, daemon=True) for qw in self.queues]
        for t in self.threads:
            t.start()

    def _check(self, buf, n, segments):
        if self.bad is None:
            self.bad = first_nonfinite(buf, segments)

    def _hash(self, buf, n, segments):
        self.sha.update(memoryview(buf)[:n])

    def _run(self, q: queue.Queue, work):
        while (item := q.get()) is not None:
            buf, n, segments, pending = item
            try:
                if self.error is None:
                    work(buf, n, segments)
            except BaseException as e:  # noqa: BLE001 - handed to the caller by finish()
                self.error = e
            with self.lock:
                pending[0] -= 1
                last = pending[0] == 0
            if last and pending[1] is not None:
                pending[1]()

    def feed(self, buf, n: int, segments, done: Callable[[], None] | None = None) -> None:
        """Check and hash ``buf[:n]`` (not to be changed until ``done`` is called). ``segments``:
        ``(name, dtype, offset, byte count)`` of the tensors in it."""
        if self.sha is not None:
            lo, hi = max(self.win_start, self.pos), min(self.win_start + 0x10000, self.pos + n)
            if lo < hi:
                self.window += memoryview(buf)[lo - self.pos:hi - self.pos]
        self.pos += n
        pending = [len(self.queues), done]
        for q, _ in self.queues:
            q.put((buf, n, segments, pending))

    def finish(self) -> tuple[str, str] | None:
        """Wait for the last chunk; the hashes (``sshs_model_hash``, ``sshs_legacy_hash``) when computed."""
        for q, _ in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error
        if self.sha is None:
            return None
        return self.sha.hexdigest(), hashlib.sha256(bytes(self.window)).hexdigest()[:8]


def first_nonfinite(buf: bytes | bytearray, segments) -> str | None:
    """The first tensor of ``segments`` whose bytes in ``buf`` hold NaN or Inf; runs of one dtype are
    checked at once, a run with a hit tensor by tensor. Numpy's check where numpy is already imported (a
    third of the time), the stdlib one otherwise (a 0/1 chop from the command line never imports numpy)."""
    nonfinite = _numpy_nonfinite if "numpy" in sys.modules else bytes_nonfinite
    i = 0
    while i < len(segments):
        j = i + 1
        while j < len(segments) and segments[j][1] == segments[i][1]:
            j += 1
        start, end = segments[i][2], segments[j - 1][2] + segments[j - 1][3]
        if nonfinite(segments[i][1], buf, start, end):
            return next(name for name, dtype, off, n in segments[i:j] if nonfinite(dtype, buf, off, off + n))
        i = j
    return None


def _numpy_nonfinite(dtype: str, buf, start: int, end: int) -> bool:
    return raw_nonfinite(dtype, memoryview(buf)[start:end])


def _read_into(fd: int, view: memoryview, pos: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], pos)
    data = os.pread(fd, len(view), pos)
    view[:len(data)] = data
    return len(data)


def _plan(entries: Mapping[str, tuple], order: list[str]):
    """The data section as pieces: ``("file", reader, start, end, segments)`` (a chunk of one file of at
    most CHUNK bytes) or ``("memory", name, dtype, source)``. ``segments``: ``(name, dtype, offset in the
    chunk, byte count)`` of each tensor, or piece of a tensor larger than CHUNK, in the chunk."""
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


def chunks(entries: Mapping[str, tuple], order: list[str], digest: Digest | None = None):
    """The data section as byte chunks, in order, each already handed to ``digest``. A yielded chunk
    must be consumed (written) before the next is asked for. In-memory tensors under SMALL bytes (alphas,
    scalars) are copied together into one chunk: one write and one hand-over to the digest for hundreds."""
    free = threading.Semaphore(BUFFERS)
    pool = [bytearray(CHUNK) for _ in range(BUFFERS)]
    turn = 0
    gathered: list | None = None       # [buffer, bytes used, segments] of small in-memory tensors

    def take() -> bytearray:
        nonlocal turn
        free.acquire()
        buf = pool[turn]
        turn = (turn + 1) % BUFFERS
        return buf

    def hand(buf: bytearray, n: int, segments: list) -> memoryview:
        if digest:
            digest.feed(buf, n, segments, free.release)
        else:
            free.release()
        return memoryview(buf)[:n]

    for piece in _plan(entries, order):
        if piece[0] == "memory":
            _, name, dtype, src = piece
            buf = src() if callable(src) else src
            if len(buf) != entries[name][2]:
                raise ChopShopError(f"internal error: tensor '{name}' has {len(buf)} bytes, "
                                    f"expected {entries[name][2]}")
            size = len(buf)
            if size < SMALL:
                if gathered and gathered[1] + size > CHUNK:
                    yield hand(*gathered)
                    gathered = None
                gathered = gathered or [take(), 0, []]
                start = gathered[1]
                memoryview(gathered[0])[start:start + size] = memoryview(buf).cast("B")
                gathered[2].append((name, dtype, start, size))
                gathered[1] += size
                continue
            if gathered:
                yield hand(*gathered)
                gathered = None
            if digest:
                if digest.check and not isinstance(buf, (bytes, bytearray)):
                    buf = bytes(buf)
                digest.feed(buf, size, [(name, dtype, 0, size)])
            yield buf
            continue
        if gathered:
            yield hand(*gathered)
            gathered = None
        _, reader, start, end, segments = piece
        n = end - start
        buf = take()
        if _read_into(reader.fd, memoryview(buf)[:n], start) != n:
            free.release()
            raise ChopShopError(f"{reader.path.name}: short read (file changed or truncated)")
        yield hand(buf, n, segments)
    if gathered:
        yield hand(*gathered)
