"""Batch on a Dask distributed cluster: the same per-file task (``batch_task.run_file``), sent to a scheduler.

Needs the optional ``distributed`` package (not in requirements.txt) here and on every worker, and this
pack importable on the workers (e.g. ``PYTHONPATH=/path/to/chopshop``). Workers read the inputs and write
OUTDIR by the paths given, so both must be on a filesystem every worker shares. A task whose worker dies
is re-run by the scheduler elsewhere (up to its ``allowed-failures``); a task that raises is retried
``retries`` times. At most ``window`` tasks are submitted at a time, so a million files do not flood the
scheduler.
"""
from __future__ import annotations

import hashlib

from .batch_task import FileJob, new_row, run_file
from .errors import ChopShopError


def task_key(job: FileJob) -> str:
    return "chopshop-batch-" + hashlib.sha1(f"{job.run_id}:{job.output}".encode()).hexdigest()[:20]


def connect(address: str, timeout: float = 10):
    try:
        from distributed import Client
    except ImportError:
        raise ChopShopError("--cluster needs the optional 'distributed' package (pip install distributed)") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ChopShopError(f"cannot reach the Dask scheduler at {address} ({e}); start one with "
                            "`dask scheduler` or check the address") from None


def run_cluster(address: str, jobs: list[FileJob], on_done, retries: int = 2, window: int | None = None) -> None:
    """Run ``jobs`` on the scheduler at ``address``; ``on_done(job, row)`` once per job."""
    from distributed import as_completed
    client = connect(address)
    try:
        if window is None:
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
            window = max(16, 4 * threads)
        pending = iter(sorted(jobs, key=lambda j: j.name))
        by_key: dict[str, FileJob] = {}

        def submit():
            job = next(pending, None)
            if job is None:
                return None
            fut = client.submit(run_file, job, key=task_key(job), retries=retries, pure=False)
            by_key[fut.key] = job
            return fut

        first = [f for f in (submit() for _ in range(window)) if f is not None]
        try:
            _collect(as_completed(first, loop=client.loop), by_key, submit, on_done)
        except Exception as e:  # the scheduler went away: every file not finished is reported, not lost
            for job in [*by_key.values(), *pending]:
                on_done(job, new_row(job, f"not run: the cluster failed ({type(e).__name__}: {e}); rerun with "
                                          "--resume"))
    finally:
        client.close()


def _collect(ac, by_key: dict, submit, on_done) -> None:
    for fut in ac:
        job = by_key.pop(fut.key)
        try:
            row = fut.result()
        except Exception as e:  # KilledWorker: this file killed every worker that tried it
            row = new_row(job, f"the cluster could not run this file ({type(e).__name__}: {e})")
        fut.release()
        on_done(job, row)
        nxt = submit()
        if nxt is not None:
            ac.add(nxt)
