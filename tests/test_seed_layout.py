"""The inspector reproduces the seed guide's chop_blocks.py output on an SDXL LyCORIS preset=full file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chopshop_dev import synth

ROOT = Path(__file__).resolve().parent.parent
SEED_OUTPUT = Path(__file__).with_name("data") / "seed_chop_blocks_output.txt"


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    sd = synth.sdxl_lycoris_full(rank=2, conv_rank=2)
    return synth.write(tmp_path_factory.mktemp("seed") / "seed.safetensors", sd, synth.SEED_META)


def run(*args):
    r = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_chop_blocks_style_output_is_the_seed_verbatim(seed):
    assert run("inspect", str(seed), "--chop-blocks-style") == SEED_OUTPUT.read_text()


def test_json_report_has_the_seed_numbers(seed):
    d = json.loads(run("inspect", str(seed), "--json"))
    assert d["architecture"] == "sdxl"
    assert [b["tensors"] for b in d["blocks"]] == [9, 9, 3, 78, 75, 3, 318, 315, 9, 306, 9, 318, 318, 321, 78, 78,
                                                    81, 12, 12, 12]
    assert [b["modules"] * 3 for b in d["blocks"]] == [b["tensors"] for b in d["blocks"]]
    assert [b["name"] for b in d["blocks"]][0] == "input_blocks.1" and d["blocks"][-1]["name"] == "output_blocks.8"
    assert d["vector_template"].split(",") == ["1"] + [f"INP{i:02d}" for i in range(1, 9)] + \
        [f"MID{i:02d}" for i in range(3)] + [f"OUT{i:02d}" for i in range(9)]
    assert d["pass_through"]["tensors"] == 264 and d["pass_through"]["modules"] == 88
    assert d["tensors"] == 2364 + 264 and d["modules"] == 788 + 88
    assert abs(sum(b["energy_share"] for b in d["blocks"]) - 1) < 1e-9
    assert d["metadata"]["ss_network_module"] == "lycoris.kohya"


def test_layout_only_reads_no_tensor_data(seed, tmp_path):
    # a copy whose data section is zeroed beyond the header still gives the same layout (header-only read)
    raw = seed.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    blank = tmp_path / "blank.safetensors"
    blank.write_bytes(raw[:8 + n] + b"\xff" * (len(raw) - 8 - n))
    a = json.loads(run("inspect", str(seed), "--json", "--layout-only"))
    b = json.loads(run("inspect", str(blank), "--json", "--layout-only"))
    assert a["blocks"] == b["blocks"] and a["vector_template"] == b["vector_template"]
