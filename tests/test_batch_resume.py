"""Kill a batch (kill -9 of its whole process group) mid-run, resume it: only the unfinished files are redone,
no temporary file is left, and every output is byte-identical to a clean run's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chopshop_dev import synth  # noqa: E402
from test_batch import ROOT, leftovers, run_cli  # noqa: E402

N_FILES = 12
ARGS = ["--rank", "4", "--jobs", "2"]


def make_files(folder: Path) -> list[Path]:
    torch.set_num_threads(1)
    out = []
    for i in range(N_FILES):
        arch, style = [("sdxl", "kohya"), ("sd15", "kohya"), ("sd15", "peft")][i % 3]
        spec = synth.make_style(style, arch, rank=8, seed=100 + i, te=False)
        out.append(synth.write(folder / arch / f"{style}-{i:02d}.safetensors", spec.sd))
    return out


def outputs(outdir: Path) -> dict[str, bytes]:
    return {p.relative_to(outdir).as_posix(): p.read_bytes() for p in outdir.rglob("*.safetensors")
            if ".chopshop-batch" not in p.parts}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    make_files(d / "lib")
    return d


def test_kill_and_resume(files):
    lib, clean, killed = files / "lib", files / "clean", files / "killed"
    proc = run_cli("resize", lib, "-o", clean, *ARGS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reference = outputs(clean)
    assert len(reference) == N_FILES

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    batch = subprocess.Popen([sys.executable, "-m", "core", "batch", "resize", str(lib), "-o", str(killed), *ARGS],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(outputs(killed) if killed.exists() else {}) < 3 and time.monotonic() < deadline:
            assert batch.poll() is None, "the batch ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(batch.pid, signal.SIGKILL)      # the driver, the forkserver and every worker
        batch.wait(timeout=30)
    finished = set(outputs(killed))
    assert 3 <= len(finished) < N_FILES, finished
    stale = killed / ".kohya-00.safetensors.999999999.tmp"   # a temp file of a dead process
    stale.write_bytes(b"partial")

    proc = run_cli("resize", lib, "-o", killed, *ARGS, "--resume", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["files"]}
    assert {n for n, r in rows.items() if r["outcome"] == "skipped"} == finished
    assert {n for n, r in rows.items() if r["outcome"] == "done"} == set(reference) - finished
    assert outputs(killed) == reference                          # byte-identical to the clean run
    assert leftovers(killed) == [] and not stale.exists()


def test_resume_checks_the_input(files, tmp_path):
    from core.batch import run_batch
    one, other = sorted((files / "lib").rglob("*.safetensors"))[:2]
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / one.name
    target.write_bytes(one.read_bytes())
    out, opts = tmp_path / "out", {"rank": 4, "device": "cpu"}
    assert run_batch("resize", [str(target)], out, opts, jobs=1, progress=False)["summary"]["done"] == 1
    os.utime(target, ns=(1, 1))                     # touched, same content: recognised by its SHA-256
    rows = run_batch("resize", [str(target)], out, opts, jobs=1, resume=True, progress=False)["files"]
    assert rows[0]["outcome"] == "skipped"
    target.write_bytes(other.read_bytes())          # another input under the same name: never overwritten
    rows = run_batch("resize", [str(target)], out, opts, jobs=1, resume=True, progress=False)["files"]
    assert rows[0]["outcome"] == "failed" and "not made from this input" in rows[0]["error"]
