"""CLI progress and number formatting: the plain progress bar (no tqdm, not a terminal), its wiring into
``inspect`` and ``chop``, and the rank mean printed rounded."""
from __future__ import annotations

import io
import re
import statistics
import sys

import pytest
from safetensors import safe_open

from chopshop_dev import synth
from core import cli, progress
from core.progress import Progress, ProgressCallback


@pytest.fixture
def no_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)   # `from tqdm import tqdm` now raises ImportError


@pytest.fixture(scope="module")
def lycoris_file(tmp_path_factory):
    """SDXL LyCORIS LoCon: rank 8 on Linears, 4 on 3x3 convs, so the rank mean is not a whole number."""
    return synth.write(tmp_path_factory.mktemp("cli") / "locon.safetensors",
                       synth.sdxl_lycoris_full(te="mlp", rank=8, conv_rank=4), {"ss_network_dim": "8"})


def test_plain_bar_one_line_per_tenth_when_not_a_terminal(no_tqdm):
    out = io.StringIO()
    with Progress(total=200, desc="work", unit="modules", delay=0, stream=out) as bar:
        for _ in range(200):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    percents = [int(re.match(r"work: +(\d+)% \[", ln).group(1)) for ln in lines]
    assert percents == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert lines[-1].startswith("work: 100% [" + "#" * 24 + "] 200 modules/200 modules")
    assert "elapsed, ETA" in lines[-1]


def test_plain_bar_silent_before_delay(no_tqdm):
    out = io.StringIO()
    with Progress(total=10, desc="work", delay=3600, stream=out) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_callback_takes_absolute_counts(no_tqdm):
    out = io.StringIO()
    with ProgressCallback("save", "B", delay=0, stream=out) as cb:
        for done in (0, 512, 1024, 2048):
            cb(done, 2048)
    assert cb.bar.done == 2048
    assert out.getvalue().splitlines()[-1].startswith("save: 100% [" + "#" * 24 + "] 2.0 KiB/2.0 KiB")


def _immediate(monkeypatch, out):
    """Make the CLI's bars appear at once (delay 0) on ``out``."""
    class Immediate(ProgressCallback):
        def __init__(self, desc="", unit="", **options):
            super().__init__(desc, unit, delay=0, stream=out)
    monkeypatch.setattr(progress, "ProgressCallback", Immediate)


def test_inspect_and_chop_draw_progress(no_tqdm, monkeypatch, lycoris_file, tmp_path, capsys):
    out = io.StringIO()
    _immediate(monkeypatch, out)
    assert cli.main(["inspect", str(lycoris_file)]) == 0
    with safe_open(str(lycoris_file), "pt") as f:
        n_modules = len({k.rsplit(".", 2)[0] for k in f.keys() if k.endswith(".lora_down.weight")})
    assert f"inspect: 100% [{'#' * 24}] {n_modules} modules/{n_modules} modules" in out.getvalue()

    out.truncate(0)
    out.seek(0)
    target = tmp_path / "chopped.safetensors"
    assert cli.main(["chop", str(lycoris_file), "--preset", "All-Out (Wolf-Link)", "-o", str(target)]) == 0
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("chop: 100% [")
    # the bar counts the data bytes written (the file minus its 8-byte length and JSON header)
    data = target.read_bytes()
    header = int.from_bytes(data[:8], "little")
    data_bytes = len(data) - 8 - header
    assert data_bytes > 2 ** 20
    assert f"{data_bytes / 2 ** 20:.1f} MiB/{data_bytes / 2 ** 20:.1f} MiB" in last


def test_rank_mean_is_rounded(lycoris_file, capsys):
    with safe_open(str(lycoris_file), "pt") as f:
        ranks = [f.get_slice(k).get_shape()[0] for k in f.keys() if k.endswith(".lora_down.weight")]
    mean = statistics.fmean(ranks)
    assert round(mean, 1) != round(mean, 4)          # the file really has a fractional mean
    assert cli.main(["inspect", str(lycoris_file)]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if ln.startswith("Rank:"))
    assert f"mean {mean:.1f}" in line
    assert not re.search(r"mean \d+\.\d\d", line), line


def test_console_entry_point_is_the_cli(capsys):
    """pyproject's ``chopshop`` script names core.cli:main, and the package data it needs is declared."""
    import importlib
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    module, func = project["project"]["scripts"]["chopshop"].split(":")
    main = getattr(importlib.import_module(module), func)
    assert main(["presets", "--architecture", "sdxl"]) == 0
    assert "Heavy Lifter" in capsys.readouterr().out
    assert project["tool"]["setuptools"]["packages"] == ["core"]
    data = project["tool"]["setuptools"]["package-data"]["core"]
    assert sorted((root / "core").glob("data/*.json.gz")) == sorted(
        p for pattern in data for p in (root / "core").glob(pattern))
    assert not [d for d in project["project"]["dependencies"] if d.split("[")[0].strip().lower() == "torch"]


def test_missing_shipped_presets_is_an_error_not_an_empty_list(tmp_path, capsys, monkeypatch):
    """What a non-editable install (core/ copied without presets.json) would see: one clear error line."""
    from core import presets
    monkeypatch.setattr(presets, "SHIPPED", tmp_path / "presets.json")
    assert cli.main(["presets"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shipped presets are missing" in err[0] and "pip install -e" in err[0]
