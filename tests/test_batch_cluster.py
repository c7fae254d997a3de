"""The batch through a real Dask cluster on 127.0.0.1: a ``dask scheduler`` and two ``dask worker`` processes
from the runtime venv. One worker is killed (kill -9) mid-run: every file still completes, once, and the
outputs are byte-identical to the process pool's."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_batch import ROOT, leftovers, run_cli  # noqa: E402
from test_batch_resume import N_FILES, make_files, outputs  # noqa: E402

pytest.importorskip("distributed")
RULE = ["--rank", "4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=ROOT, env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], tmp_path / "s.log")]
    try:
        for i in range(2):
            procs.append(start(["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                "--name", f"w{i}", "--host", "127.0.0.1"], tmp_path / f"w{i}.log"))
        from distributed import Client
        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=90)
        yield address, procs[1:]
    finally:
        for p in reversed(procs):
            stop(p)


def test_cluster_with_a_worker_killed(cluster, tmp_path):
    address, workers = cluster
    lib = tmp_path / "lib"
    make_files(lib)
    local = tmp_path / "local"
    assert run_cli("resize", lib, "-o", local, *RULE, "--jobs", "2").returncode == 0
    reference = outputs(local)

    out = tmp_path / "dask"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    batch = subprocess.Popen([sys.executable, "-m", "core", "batch", "resize", str(lib), "-o", str(out), *RULE,
                              "--cluster", address, "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(outputs(out) if out.exists() else {}) < 2 and time.monotonic() < deadline:
            assert batch.poll() is None, batch.stderr.read()
            time.sleep(0.05)
        os.killpg(workers[0].pid, signal.SIGKILL)          # a worker dies mid-run
        assert len(outputs(out)) < N_FILES and batch.poll() is None
        stdout, stderr = batch.communicate(timeout=180)
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert workers[0].wait(timeout=10) == -signal.SIGKILL
    assert batch.returncode == 0, stdout[-2000:] + stderr[-2000:]
    rows = json.loads(stdout)["files"]
    assert sorted(r["name"] for r in rows) == sorted(reference)       # every file, once
    assert {r["outcome"] for r in rows} == {"done"}
    assert outputs(out) == reference                                    # same bytes, no duplicates
    assert leftovers(out) == []


def test_unreachable_scheduler_is_one_clear_error():
    from core.batch_cluster import connect
    from core.errors import ChopShopError
    with pytest.raises(ChopShopError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:"):
        connect(f"tcp://127.0.0.1:{free_port()}", timeout=2)
