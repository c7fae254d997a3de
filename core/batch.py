"""Batch: inspect, chop or resize a whole LoRA library, on a process pool or a Dask cluster.

``python -m core batch {inspect,chop,resize} INPUTS... -o OUTDIR`` — INPUTS are files, folders (recursive)
or globs; outputs mirror each input's tree under OUTDIR (inspect writes ``NAME.json``). Every file is one
task (``batch_task.run_file``) that succeeds or fails on its own; the report lands in
``OUTDIR/chopshop-batch.json`` and ``.csv``. See docs/batch.md.
"""
from __future__ import annotations

import glob
import os
import re
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .batch_report import render_table, summarize, write_reports
from .batch_task import FileJob, new_row, run_file
from .errors import ChopShopError

STATE_DIR = ".chopshop-batch"
SUFFIX = ".safetensors"
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


# ------------------------------------------------------------------------------------ inputs

def discover(inputs: list[str], outdir: Path) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Expand INPUTS into ``[(file, name relative to its root)]`` sorted by name, plus ``[(input, why)]``
    for inputs that match nothing. Files under OUTDIR are never inputs."""
    found: dict[Path, tuple[Path, str]] = {}
    missing: list[tuple[str, str]] = []
    for item in inputs:
        if glob.has_magic(item):
            base = _glob_base(item)
            hits = [Path(h) for h in sorted(glob.glob(item, recursive=True))]
            pairs = [p for h in hits for p in (_walk(h, outdir) if h.is_dir() else [(h, h.name)])
                     if p[0].is_file() and p[0].name.lower().endswith(SUFFIX)]
            pairs = [(f, _rel(f, base)) for f, _ in pairs]
            if not pairs:
                missing.append((item, "no file matches this pattern"))
        elif Path(item).is_dir():
            pairs = _walk(Path(item), outdir)
            if not pairs:
                missing.append((item, f"no {SUFFIX} file in this folder"))
        elif Path(item).exists():
            pairs = [(Path(item), Path(item).name)]
        else:
            missing.append((item, "no such file or folder"))
            continue
        for f, name in pairs:
            if not _inside(f, outdir):
                found.setdefault(f.resolve(), (f, name))
    return sorted(found.values(), key=lambda p: (p[1], str(p[0]))), missing


def _glob_base(pattern: str) -> Path:
    """The folder a glob's matches are named relative to: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _walk(root: Path, outdir: Path) -> list[tuple[Path, str]]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(Path(folder) / d, outdir))
        out += [(Path(folder) / f, _rel(Path(folder) / f, root)) for f in sorted(files)
                if f.lower().endswith(SUFFIX) and not f.startswith(".")]
    return out


def _rel(f: Path, root: Path) -> str:
    try:
        return f.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f.name


def _inside(p: Path, folder: Path) -> bool:
    p, folder = p.resolve(), folder.resolve()
    return p == folder or folder in p.parents


# ------------------------------------------------------------------------------------ OUTDIR state

@contextmanager
def locked_outdir(outdir: Path):
    """Hold ``OUTDIR/.chopshop-batch/lock`` (one batch per OUTDIR) and clean what killed runs left."""
    import fcntl
    state = outdir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ChopShopError(f"{outdir}: another batch is writing to this folder; wait for it or choose "
                                "another OUTDIR") from None
        clean_stale(outdir)
        yield state
    finally:
        os.close(fd)


def clean_stale(outdir: Path) -> list[Path]:
    """Remove the staging folders of earlier runs and ``.NAME.PID.tmp`` files whose process is gone."""
    import shutil
    removed = []
    work = outdir / STATE_DIR / "work"
    if work.is_dir():
        removed.append(work)
        shutil.rmtree(work, ignore_errors=True)
    for folder, dirs, files in os.walk(outdir):
        for f in files:
            m = _TMP_NAME.match(f)
            if m and not pid_alive(int(m.group(1))):
                removed.append(Path(folder) / f)
                (Path(folder) / f).unlink(missing_ok=True)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------ planning and running

def plan_jobs(operation: str, files: list[tuple[Path, str]], outdir: Path, options: dict, run_id: str,
              resume: bool, min_retention: float | None) -> list[FileJob]:
    work = outdir / STATE_DIR / "work" / run_id
    jobs = []
    for src, name in files:
        out_name = name[: -len(SUFFIX)] + ".json" if operation == "inspect" and name.lower().endswith(SUFFIX) \
            else (name + ".json" if operation == "inspect" else name)
        jobs.append(FileJob(source=str(src), name=name, output=str(outdir / out_name),
                            record=str(outdir / STATE_DIR / "records" / (name + ".json")), work=str(work),
                            operation=operation, options=dict(options), run_id=run_id, resume=resume,
                            min_retention=min_retention))
    return jobs


def worker_init() -> None:
    """Each pool worker computes on one thread: the pool itself is the parallelism. The worker is a process of
    ours, so torch's objects are frozen out of later garbage collections (``gc_freeze``)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    from .gc_freeze import freeze_imports
    freeze_imports()


def run_local(jobs: list[FileJob], n_jobs: int, on_done, max_crashes: int = 2) -> None:
    """Run ``jobs`` on a pool of ``n_jobs`` processes (forkserver), largest inputs first; a worker that
    dies (crash, out of memory) fails its file after ``max_crashes`` tries and the pool is restarted."""
    import multiprocessing as mp
    from collections import Counter, deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    queue = deque(sorted(jobs, key=lambda j: -_size(j.source)))
    crashes: Counter = Counter()
    while queue:
        with ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=worker_init) as pool:
            inflight: dict = {}
            while queue or inflight:
                while queue and len(inflight) < 2 * n_jobs:
                    job = queue.popleft()
                    inflight[pool.submit(run_file, job)] = job
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    job = inflight.pop(fut)
                    try:
                        on_done(job, fut.result())
                    except BrokenProcessPool:
                        broken = True
                        crashes[job] += 1
                        if crashes[job] >= max_crashes:
                            on_done(job, new_row(job, "the worker process died while processing this file "
                                                      "(crash or out of memory)"))
                        else:
                            queue.appendleft(job)
                if broken:
                    queue.extendleft(inflight.values())
                    break


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def run_batch(operation: str, inputs: list[str], outdir: str | Path, options: dict | None = None,
              jobs: int | None = None, resume: bool = False, min_retention: float | None = None,
              cluster: str | None = None, progress: bool = True) -> dict:
    """Run a batch and write its reports; returns the report (``summary`` and one row per input)."""
    from .progress import Progress
    outdir = Path(outdir).resolve()
    options = dict(options or {})
    files, missing = discover(inputs, outdir)
    if not files and not missing:
        raise ChopShopError("no .safetensors inputs found (files under OUTDIR are never inputs)")
    t0 = time.perf_counter()
    rows: dict[str, dict] = {}
    with locked_outdir(outdir):
        run_id = uuid.uuid4().hex
        planned = plan_jobs(operation, files, outdir, options, run_id, resume, min_retention)
        todo = _drop_collisions(planned, rows)
        total = sum(_size(j.source) for j in todo)
        with Progress(total, desc=f"batch {operation}", unit="B", enabled=progress) as bar:
            def on_done(job: FileJob, row: dict) -> None:
                rows[job.name] = row
                bar.update(_size(job.source), postfix=job.name)
            if cluster:
                from .batch_cluster import run_cluster
                run_cluster(cluster, todo, on_done)
            elif todo:
                run_local(todo, jobs or os.cpu_count() or 1, on_done)
        import shutil
        shutil.rmtree(outdir / STATE_DIR / "work" / run_id, ignore_errors=True)
        ordered = [rows[j.name] for j in planned] + [_missing_row(i, why) for i, why in missing]
        report = {"operation": operation, "options": options, "outdir": str(outdir),
                  "min_retention": min_retention, "resume": resume, "cluster": cluster,
                  "jobs": None if cluster else (jobs or os.cpu_count()),
                  "summary": summarize(ordered, time.perf_counter() - t0), "files": ordered}
        write_reports(outdir, report)
    return report


def _drop_collisions(jobs: list[FileJob], rows: dict) -> list[FileJob]:
    seen: dict[str, FileJob] = {}
    todo = []
    for j in jobs:
        if j.output in seen:
            rows[j.name] = new_row(j, f"output name {j.name} is also the output of {seen[j.output].source}; "
                                      "give the inputs in separate batches")
        else:
            seen[j.output] = j
            todo.append(j)
    return todo


def _missing_row(item: str, why: str) -> dict:
    job = FileJob(source=item, name=item, output="", record="", work="", operation="")
    return new_row(job, f"{item}: {why}")


# ------------------------------------------------------------------------------------ command line

def add_batch_parser(subparsers) -> None:
    """Register ``batch {inspect,chop,resize}`` on the CLI's subparsers."""
    from .batch_cli import add_parsers
    add_parsers(subparsers, cmd_batch)


def cmd_batch(args) -> int:
    from .batch_cli import options_from_args
    import json
    import sys
    options, min_retention = options_from_args(args)
    report = run_batch(args.operation, args.inputs, args.output_dir, options, jobs=args.jobs,
                       resume=args.resume, min_retention=min_retention, cluster=args.cluster,
                       progress=not args.json)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
    else:
        print(render_table(report))
        print(f"Report: {Path(report['outdir']) / 'chopshop-batch.json'} (and .csv)")
    return 0 if report["summary"]["ok"] else 2
