"""One file of a batch: the task a process-pool worker or a Dask worker runs (``run_file(job) -> row``).

A task never raises: every failure becomes the row's one-line ``error``. Its work is staged under the
run's work folder (``OUTDIR/.chopshop-batch/work/RUN``) and lands in two atomic steps: first the record
(``OUTDIR/.chopshop-batch/records/REL.json``: input fingerprint, settings, outcome), then the output,
hard-linked from the staged file (never replacing a file). So an output that exists was made from the
recorded input; a kill between the steps leaves a record without output, and the file is redone.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from types import SimpleNamespace

from .errors import ChopShopError, OutputExists

OUTCOMES = ("done", "skipped", "below threshold", "failed")
_stage_counter = count()


@dataclass(frozen=True)
class FileJob:
    """Everything a worker needs for one input; plain data, so it pickles to any worker."""
    source: str                 # input path
    name: str                   # the input's path relative to its root (mirrored under OUTDIR)
    output: str                 # final output path
    record: str                 # record path
    work: str                   # staging folder of this run
    operation: str              # inspect | chop | resize
    options: dict = field(default_factory=dict)
    run_id: str = ""
    resume: bool = False
    min_retention: float | None = None

    @property
    def settings(self) -> str:
        """What decides the output's bytes: the operation and its options (a stable JSON string)."""
        return json.dumps({"operation": self.operation, **self.options}, sort_keys=True)


def new_row(job: FileJob, error: str = "", outcome: str = "failed") -> dict:
    return {"input": job.source, "name": job.name, "output": job.output, "bytes_in": None, "bytes_out": None,
            "retention": None, "outcome": outcome, "seconds": 0.0, "error": error, "note": ""}


def single_thread() -> None:
    """torch on one CPU thread in this process (a batch worker), without importing it (inspect and 0/1 chop
    tasks never need it): set now if torch is loaded, else through OMP_NUM_THREADS for its import."""
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ["OMP_NUM_THREADS"] = "1"
    elif torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def run_file(job: FileJob) -> dict:
    """Process one file; returns its report row (outcome in OUTCOMES, error one line when failed). Runs on
    one CPU thread: the pool's or the cluster's workers are the parallelism."""
    single_thread()
    t0 = time.perf_counter()
    row = new_row(job)
    stage = None
    try:
        stage = _process(job, row)
    except ChopShopError as e:
        row["error"] = str(e)
    except MemoryError:
        row["error"] = "out of memory"
    except OSError as e:
        row["error"] = f"{e.strerror or e}: {e.filename or job.source}"
    except Exception as e:  # a file must never stop the batch: report it and go on
        row["error"] = f"unexpected {type(e).__name__}: {e}"
    finally:
        if stage is not None:
            _unlink(stage)
    if row["error"]:
        row["outcome"] = "failed"
        row["error"] = " ".join(str(row["error"]).split())
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _process(job: FileJob, row: dict) -> Path | None:
    src, out = Path(job.source), Path(job.output)
    st = src.stat()
    row["bytes_in"] = st.st_size
    rec = read_record(job.record)
    if rec is not None and rec.get("settings") == job.settings and same_input(rec, src, st):
        if _reuse(job, rec, row, out):
            return None
    if out.exists():
        hint = "" if job.resume else " or --resume"
        raise OutputExists(f"{out}: already exists and was not made from this input with these settings; it is "
                           f"never overwritten (choose another OUTDIR{hint})")
    sha = file_sha256(src)
    stage = Path(job.work) / f"{socket.gethostname()}-{os.getpid()}-{next(_stage_counter)}{out.suffix}"
    retention = _operate(job, src, stage)
    row["retention"] = retention
    base = {"input_sha256": sha, "input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns,
            "settings": job.settings, "run_id": job.run_id, "retention": retention}
    if job.min_retention is not None and retention is not None and retention < job.min_retention:
        write_record(job, {**base, "outcome": "below threshold"})
        row["outcome"], row["note"] = "below threshold", f"retention {retention:.4f} < {job.min_retention:g}"
        return stage
    size = stage.stat().st_size
    write_record(job, {**base, "outcome": "done", "bytes_out": size})
    land(stage, out)
    row["outcome"], row["bytes_out"] = "done", size
    return stage


def _reuse(job: FileJob, rec: dict, row: dict, out: Path) -> bool:
    """True when the record of an earlier attempt settles this file (resume, or a retry within this run)."""
    if not (job.resume or rec.get("run_id") == job.run_id):
        return False
    again = rec.get("run_id") == job.run_id
    row["retention"] = rec.get("retention")
    if rec.get("outcome") == "below threshold":
        r = rec.get("retention")
        if job.min_retention is not None and r is not None and r < job.min_retention:
            row["outcome"], row["note"] = "below threshold", "as recorded by an earlier run"
            return True
        return False
    if out.is_file() and out.stat().st_size == rec.get("bytes_out"):
        row["bytes_out"] = rec["bytes_out"]
        row["outcome"] = "done" if again else "skipped"
        row["note"] = "finished by an earlier attempt" if again else "output exists and matches the input"
        return True
    return False


def same_input(rec: dict, src: Path, st: os.stat_result) -> bool:
    """Is ``src`` the input the record was made from? Size must match; then an unchanged mtime settles it,
    else the SHA-256 of the content (so a copied or touched library is still recognised)."""
    if rec.get("input_size") != st.st_size:
        return False
    if rec.get("input_mtime_ns") == st.st_mtime_ns:
        return True
    return rec.get("input_sha256") == file_sha256(src)


def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while buf := f.read(chunk):
            h.update(buf)
    return h.hexdigest()


def read_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def write_record(job: FileJob, rec: dict) -> None:
    """Replace the record atomically (temp file in the work folder, then rename)."""
    path = Path(job.record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(job.work) / f"record-{socket.gethostname()}-{os.getpid()}-{next(_stage_counter)}.json"
    tmp.write_text(json.dumps({"input": job.name, **rec}, sort_keys=True, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def land(stage: Path, out: Path) -> None:
    """Give the staged file its final name without ever replacing a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(stage, out)
    except FileExistsError:
        raise OutputExists(f"{out}: already exists; it is never overwritten") from None


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------------ the three operations

def _operate(job: FileJob, src: Path, stage: Path) -> float | None:
    """Run the operation with its output at ``stage``; returns the energy-weighted retention (resize)."""
    stage.parent.mkdir(parents=True, exist_ok=True)
    o = job.options
    if job.operation == "chop":
        from .chop import chop_file
        chop_file(src, vector=o.get("vector"), preset=o.get("preset"), output=stage,
                  te_weight=o.get("te_weight", 1.0))
        return None
    if job.operation == "resize":
        from .cli import rule_from_args
        from .resize import resize_file
        rule = rule_from_args(SimpleNamespace(**o))
        report = resize_file(src, rule=rule, output=stage, dtype=o.get("dtype", "fp16"),
                             device=o.get("device"), base=o.get("base"))
        return weighted_retention(report)
    if job.operation == "inspect":
        return _inspect(src, stage, energies=not o.get("layout_only", False))
    raise ChopShopError(f"unknown batch operation {job.operation!r}; use inspect, chop or resize")


def _inspect(src: Path, stage: Path, energies: bool) -> None:
    from .inspect_report import inspect
    from .lora_file import read
    report = inspect(read(src), energies=energies)
    tmp = stage.with_name(f".{stage.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, stage)
    return None


def weighted_retention(report: dict) -> float | None:
    """Energy-weighted Frobenius retention sqrt(Σ kept ‖ΔW‖² / Σ ‖ΔW‖²) of a resize report: its
    ``fro_retention_weighted`` when given, else summed from per-block or per-layer energies."""
    v = report.get("fro_retention_weighted")
    if v is not None:
        return float(v)
    for parts in (list((report.get("per_block") or {}).values()), report.get("layers") or []):
        e = sum(p.get("energy") or 0.0 for p in parts)
        kept = sum(p.get("energy_kept") or 0.0 for p in parts)
        if e > 0:
            return math.sqrt(kept / e)
    return None
