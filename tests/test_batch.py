"""Batch over a library: 40 LoRAs of mixed architectures, styles and adapter kinds, 3 corrupt files and one
that falls below --min-retention, through the real command line (a process pool of 2).

Oracles: the single-file functions (``resize_file``, ``chop_file``, ``inspect``) run here on the same inputs;
the flat-spectrum file's retention is sqrt(16/48) by construction; hashes of the inputs before and after.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_library import build_library, sha256  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RULE = ["--sv-fro", "0.9", "--max-rank", "16"]
MIN_RET = 0.6                 # the flat-spectrum file keeps sqrt(16/48) = 0.577


def run_cli(*args, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", "batch", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def leftovers(outdir: Path) -> list[Path]:
    """Temporary or staging files anywhere under OUTDIR."""
    return [p for p in outdir.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or "work" in p.parts)]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    lib = build_library(root / "lib")
    lib["root"] = root / "lib"
    lib["hashes"] = {p: sha256(p) for p in lib["good"] + lib["corrupt"]}
    out = root / "out"
    lib["out"] = out
    lib["proc"] = run_cli("resize", lib["root"], "-o", out, *RULE, "--min-retention", MIN_RET, "--jobs", 2, "--json")
    return lib


def test_library_batch_outcomes(library):
    proc, out, root = library["proc"], library["out"], library["root"]
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    rows = {Path(r["input"]): r for r in report["files"]}
    assert len(library["good"]) == 40
    assert set(rows) == set(library["good"]) | set(library["corrupt"])     # every input, once
    for p in library["good"]:
        r, target = rows[p], out / p.relative_to(root)
        if p == library["flat"]:
            continue
        assert r["outcome"] == "done", (p, r)
        assert r["output"] == str(target) and target.is_file()
        assert r["bytes_out"] == target.stat().st_size
        # sv_fro 0.9 per layer -> >= 0.9 overall; LyCORIS files: LoKr modules resized in their own form under
        # --max-rank 16, which caps their retention below 0.9 (still above MIN_RET)
        assert r["retention"] >= (MIN_RET if "lycoris" in p.name else 0.9 - 1e-6), (p, r)
    for p in library["corrupt"]:
        r = rows[p]
        assert r["outcome"] == "failed" and p.name in r["error"] and "\n" not in r["error"]
        assert not (out / p.relative_to(root)).exists()
    s = report["summary"]
    assert (s["done"], s["failed"], s["below threshold"], s["files"]) == (39, 3, 1, 43)
    assert sorted(leftovers(out)) == []
    assert {p: sha256(p) for p in library["hashes"]} == library["hashes"]   # inputs unchanged


def test_below_threshold_writes_nothing(library):
    out, flat = library["out"], library["flat"]
    r = next(r for r in json.loads(library["proc"].stdout)["files"] if Path(r["input"]) == flat)
    assert r["outcome"] == "below threshold"
    assert r["retention"] == pytest.approx(math.sqrt(16 / 48), abs=1e-4)   # 48 equal singular values, keep 16
    assert not (out / flat.relative_to(library["root"])).exists()


def test_reports_list_every_input(library):
    out = library["out"]
    report = json.loads((out / "chopshop-batch.json").read_text())
    with open(out / "chopshop-batch.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    inputs = {str(p) for p in library["hashes"]}
    assert {r["input"] for r in report["files"]} == inputs
    assert {r["input"] for r in rows} == inputs and len(rows) == 43
    assert set(rows[0]) >= {"input", "output", "bytes_in", "bytes_out", "retention", "outcome", "seconds", "error"}
    by = {r["input"]: r for r in rows}
    for p in library["corrupt"]:
        assert by[str(p)]["outcome"] == "failed" and p.name in by[str(p)]["error"]


def test_outputs_equal_single_file_resize(library, tmp_path):
    from core.resize import Rule, resize_file
    for name in ("sdxl/kohya.safetensors", "lycoris_zoo.safetensors", "flux/peft.safetensors"):
        ref = tmp_path / name.replace("/", "_")
        resize_file(library["root"] / name, rule=Rule("sv_fro", 0.9, 16), output=ref, dtype="fp16", device="cpu")
        assert (library["out"] / name).read_bytes() == ref.read_bytes(), name


def test_existing_output_is_never_overwritten(library, tmp_path):
    src = library["root"] / "sdxl" / "kohya.safetensors"
    out = tmp_path / "o"
    (out).mkdir()
    (out / "kohya.safetensors").write_bytes(b"mine")
    proc = run_cli("resize", src, "-o", out, "--rank", 1, "--json")
    assert proc.returncode == 2
    row = json.loads(proc.stdout)["files"][0]
    assert row["outcome"] == "failed" and "never overwritten" in row["error"]
    assert (out / "kohya.safetensors").read_bytes() == b"mine"


def test_chop_and_inspect_batches_match_single_file(library, tmp_path):
    from core.chop import chop_file
    from core.inspect_report import inspect
    from core.lora_file import read
    files = [library["root"] / "sdxl" / n for n in ("kohya.safetensors", "peft.safetensors")]
    proc = run_cli("chop", *files, "-o", tmp_path / "chop", "--preset", "Style", "--jobs", 1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for f in files:
        ref = chop_file(f, preset="Style", output=tmp_path / f"ref-{f.name}")["output"]
        assert (tmp_path / "chop" / f.name).read_bytes() == Path(ref).read_bytes()
    proc = run_cli("inspect", library["root"] / "sdxl", library["corrupt"][1], "-o", tmp_path / "insp", "--jobs", 2)
    assert proc.returncode == 2 and "garbage.safetensors" in proc.stdout
    got = json.loads((tmp_path / "insp" / "kohya.json").read_text())
    assert got == json.loads(json.dumps(inspect(read(files[0]))))


def test_bad_options_fail_before_any_file(tmp_path):
    proc = run_cli("resize", tmp_path, "-o", tmp_path / "o", "--rank", 4, "--min-retention", 90)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --min-retention")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_missing_input_is_reported_not_fatal(library, tmp_path):
    src = library["root"] / "sd15" / "flat-spectrum.safetensors"
    proc = run_cli("resize", src, tmp_path / "nope.safetensors", "-o", tmp_path / "o", "--rank", 48, "--json")
    assert proc.returncode == 2
    rows = {r["name"]: r for r in json.loads(proc.stdout)["files"]}
    assert rows["flat-spectrum.safetensors"]["outcome"] == "done"
    assert "no such file" in rows[str(tmp_path / "nope.safetensors")]["error"]


def test_inputs_files_folders_globs_mirror_the_tree(tmp_path, monkeypatch):
    from core.batch import discover
    for rel in ("lib/a/x.safetensors", "lib/a/b/y.SAFETENSORS", "lib/c/z.safetensors", "lib/c/notes.txt",
                "lib/.hidden/h.safetensors", "lib/out/old.safetensors", "solo.safetensors"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    found, missing = discover(["lib", "solo.safetensors", "lib/*/**/*.safetensors", "nothing/*.safetensors",
                               "absent.safetensors"], tmp_path / "lib" / "out")
    assert [n for _, n in found] == ["a/b/y.SAFETENSORS", "a/x.safetensors", "c/z.safetensors", "solo.safetensors"]
    assert [m for m, _ in missing] == ["nothing/*.safetensors", "absent.safetensors"]
    found, _ = discover(["lib/c/*.safetensors"], tmp_path / "o")
    assert [n for _, n in found] == ["z.safetensors"]


def test_weighted_retention_from_energies_when_not_given():
    from core.batch_task import weighted_retention
    assert weighted_retention({"fro_retention_weighted": 0.75}) == 0.75
    blocks = {"a": {"energy": 3.0, "energy_kept": 1.0}, "b": {"energy": 1.0, "energy_kept": 1.0}}
    assert weighted_retention({"per_block": blocks}) == pytest.approx(math.sqrt(2 / 4))
    layers = [{"energy": 2.0, "energy_kept": 0.5}, {"energy": 2.0, "energy_kept": 1.5}]
    assert weighted_retention({"layers": layers}) == pytest.approx(math.sqrt(0.5))
