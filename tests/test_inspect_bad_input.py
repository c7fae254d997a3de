"""Bad input to ``python -m core inspect``: one clear ``error: ...`` line on stderr, non-zero exit, no traceback;
pickles are refused without being unpickled; an unknown architecture still lists its modules (exit 0)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from chopshop_dev import synth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_inspect(path, *extra):
    return subprocess.run([sys.executable, "-m", "core", "inspect", str(path), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def assert_clean_error(p, *words):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ")
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    assert p.stdout == ""


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    spec = synth.make_style("kohya", "sdxl", non_block=False, te=False)
    return synth.write(tmp_path_factory.mktemp("bad") / "good.safetensors", spec.sd)


def test_truncated_file(good, tmp_path):
    data = good.read_bytes()
    for cut in (4, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        r = run_inspect(p)
        assert_clean_error(r)
        assert any(w in r.stderr for w in ("truncated", "not a safetensors", "not a valid", "corrupt")), r.stderr


def test_corrupt_header(good, tmp_path):
    data = bytearray(good.read_bytes())
    data[8:20] = b"#garbage!{[("            # JSON broken
    p = tmp_path / "corrupt.safetensors"
    p.write_bytes(bytes(data))
    assert_clean_error(run_inspect(p), "corrupt")
    # a valid JSON header that points outside the file
    hdr = json.dumps({"x.lora_down.weight": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 10 ** 6]}})
    raw = hdr.encode() + b" " * (-len(hdr) % 8)
    p2 = tmp_path / "offsets.safetensors"
    p2.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 32)
    assert_clean_error(run_inspect(p2), "outside the file")


def test_random_bytes(tmp_path):
    p = tmp_path / "random.safetensors"
    p.write_bytes(os.urandom(4096))
    assert_clean_error(run_inspect(p))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    assert_clean_error(run_inspect(p))


def test_missing_file(tmp_path):
    assert_clean_error(run_inspect(tmp_path / "nope.safetensors"), "no such file")


class _Boom:
    """Unpickling this would create a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_files_are_refused_unopened(tmp_path, suffix):
    marker = tmp_path / "UNPICKLED"
    p = tmp_path / f"lora{suffix}"
    with open(p, "wb") as f:
        pickle.dump({"a.lora_down.weight": torch.zeros(2, 2), "boom": _Boom(str(marker))}, f)
    r = run_inspect(p)
    assert_clean_error(r, "pickle")
    assert not marker.exists()


def test_pickle_renamed_to_safetensors(tmp_path):
    marker = tmp_path / "UNPICKLED"
    p = tmp_path / "sneaky.safetensors"
    with open(p, "wb") as f:
        pickle.dump({"boom": _Boom(str(marker))}, f)
    assert_clean_error(run_inspect(p))
    assert not marker.exists()


def test_model_state_dict_is_not_a_lora(tmp_path):
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3, dtype=torch.float16),
          "model.diffusion_model.input_blocks.0.0.bias": torch.zeros(8, dtype=torch.float16),
          "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4, 3, 3, dtype=torch.float16)}
    p = tmp_path / "model.safetensors"
    save_file(sd, str(p))
    assert_clean_error(run_inspect(p), "no LoRA tensors")


def test_safetensors_without_tensors(tmp_path):
    p = tmp_path / "none.safetensors"
    save_file({}, str(p), metadata={"ss_network_dim": "8"})
    assert_clean_error(run_inspect(p))


def test_unknown_architecture_still_lists_modules(tmp_path):
    g = torch.Generator().manual_seed(1)
    sd = {}
    for name in ("foo_encoder_mixer_3_gate", "bar_tower_17_proj", "lora_unet_zzz_blocks_5_qqq"):
        sd[f"{name}.lora_down.weight"] = torch.randn(2, 16, generator=g).half()
        sd[f"{name}.lora_up.weight"] = torch.randn(24, 2, generator=g).half()
        sd[f"{name}.alpha"] = torch.tensor(1.0)
    p = tmp_path / "alien.safetensors"
    save_file(sd, str(p))
    r = run_inspect(p, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["architecture"] == "unknown"
    assert rep["modules"] == 3 and rep["tensors"] == 9
    assert rep["blocks"] == [] and rep["vector_template"] == "1"
    assert rep["pass_through"]["modules"] == 3 and rep["pass_through"]["tensors"] == 9
    assert rep["adapter_counts"] == {"LoRA": 3}
    assert {u["module"] for u in rep["unresolved"]} == {"foo_encoder_mixer_3_gate", "bar_tower_17_proj",
                                                          "lora_unet_zzz_blocks_5_qqq"}
    r = run_inspect(p)
    assert r.returncode == 0 and "unknown" in r.stdout


def test_unknown_keys_are_reported_not_fatal(good, tmp_path):
    from safetensors.torch import load_file
    sd = load_file(str(good))
    sd["bundle_emb.mytoken.string_to_param.*"] = torch.zeros(2, 768, dtype=torch.float16)
    p = tmp_path / "extra.safetensors"
    save_file(sd, str(p))
    r = run_inspect(p, "--json", "--layout-only")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["pass_through"]["unknown_key_count"] == 1
    assert rep["architecture"] == "sdxl" and rep["unresolved_count"] == 0
