"""Resize v2: the recipe syntax and spn_ckpt against a dense oracle; bad devices, bad base files, unknown keys,
broken or zero base layers and rank mismatches give one clear message (docs/resize.md §4.3)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from chopshop_dev import synth
from test_resize import crafted_file

from core import base_model
from core.errors import ChopShopError
from core.lora_file import read
from core.resize import Rule, render_report, resize

ROOT = Path(__file__).resolve().parent.parent
SPECTRUM = [1.0, 0.3, 0.1, 0.03, 0.01, 0.003]


def base_for(lora, names, norms, tmp_path, seed=0):
    """A base file whose layers have known Frobenius norms; returns its path and the dense W0 per label."""
    g = torch.Generator().manual_seed(seed)
    sd, dense = {}, {}
    for label, mod in names.items():
        m = next(x for x in lora.modules if x.base == mod)
        W = torch.randn(*m.target.shape, generator=g)
        W = W / W.norm() * norms[label]
        sd["model." + m.target.key], dense[label] = W, W
    p = tmp_path / "base.safetensors"
    save_file(sd, str(p))
    return p, dense


def oracle_rank(S, refs: dict[str, float], weights: dict[str, float], thr: float) -> int:
    """elias' rule, written out: keep σ_i with log10 σ_i − Σ_j ŵ_j log10 ref_j >= thr, ŵ = w / Σ w."""
    total = sum(weights.values())
    offset = sum(w / total * math.log10(refs[t]) for t, w in weights.items())
    return sum(1 for s in S if math.log10(s) - offset >= thr)


@pytest.mark.parametrize("recipe", ["fro_ckpt=1,thr=-3.55", "spn_ckpt=1,thr=-2.2", "spn_ckpt=1,fro_lora=1,thr=-1.1",
                                    "fro_ckpt=0.5,spn=0.5,thr=-1.6", "spn_ckpt,params=0.2,thr=-2"])
def test_recipe_matches_dense_oracle(tmp_path, recipe):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM, "b": SPECTRUM})
    lora = read(path)
    bp, dense = base_for(lora, names, {"a": 30.0, "b": 3000.0}, tmp_path)
    _, report = resize(lora, Rule("recipe", recipe), dtype="fp32", device="cpu",
                       base=base_model.from_file(bp, use_cache=False))
    by = {lr["name"]: lr for lr in report["layers"]}
    parts = dict(p.partition("=")[::2] for p in recipe.split(","))
    thr = float(parts.pop("thr"))
    alias = {"spn": "spn_lora", "fro": "fro_lora"}
    weights = {alias.get(k, k): float(v) if v else 1.0 for k, v in parts.items()}
    for label, mod in names.items():
        W = dense[label].double()
        refs = {"fro_ckpt": float(W.norm()), "spn_ckpt": float(torch.linalg.svdvals(W)[0]),
                "spn_lora": SPECTRUM[0], "fro_lora": math.sqrt(sum(s * s for s in SPECTRUM)),
                "params": sum(W.shape)}
        k = oracle_rank(SPECTRUM, refs, weights, thr)
        assert by[mod]["rank_out"] == max(k, 0) or (k == 0 and by[mod]["outcome"] == "rank0-dropped"), (label, k)


def test_recipe_fro_ckpt_equals_fro_ckpt_rule(tmp_path):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM, "b": SPECTRUM})
    lora = read(path)
    bp, _ = base_for(lora, names, {"a": 5.0, "b": 50.0}, tmp_path)
    base = base_model.from_file(bp, use_cache=False)
    ranks = [[lr["rank_out"] for lr in resize(lora, rule, device="cpu", base=base)[1]["layers"]]
             for rule in (Rule("fro_ckpt", -2.5), Rule("recipe", "fro_ckpt=1,thr=-2.5"))]
    assert ranks[0] == ranks[1] and len(set(ranks[0])) == 2


def test_norm_cache_is_used_and_matches(tmp_path):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM, "b": SPECTRUM})
    lora = read(path)
    bp, dense = base_for(lora, names, {"a": 5.0, "b": 50.0}, tmp_path)
    cold = base_model.from_file(bp, cache_dir=tmp_path / "cache")
    targets = [m.target for m in lora.modules]
    n1 = cold.norms(targets, "sdxl")
    assert list((tmp_path / "cache").glob("*.json"))
    warm = base_model.from_file(bp, cache_dir=tmp_path / "cache")
    warm._lookup = lambda k: pytest.fail("a warm cache must read no base weight")
    assert warm.norms(targets, "sdxl") == n1
    want = sorted(float(W.double().norm()) for W in dense.values())
    assert sorted(v[0] for v in n1.values()) == pytest.approx(want, rel=1e-6)


def test_zero_base_layer_is_reported(tmp_path):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM, "b": SPECTRUM})
    lora = read(path)
    bp, _ = base_for(lora, names, {"a": 5.0, "b": 0.0}, tmp_path)
    _, report = resize(lora, Rule("fro_ckpt", -2), device="cpu", base=base_model.from_file(bp, use_cache=False))
    assert any(names["b"] in w and "all zero" in w for w in report["warnings"])
    assert {lr["name"]: lr["rank_out"] for lr in report["layers"]}[names["b"]] == len(SPECTRUM)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "core", "resize", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True)


@pytest.mark.parametrize("device", ["cuda", "tpu", "meta", "nonsense"])
def test_unavailable_device_is_one_line(tmp_path, device):
    path, _ = crafted_file(tmp_path, {"a": [1.0, 0.5]})
    r = run_cli(path, "--rank", "1", "--device", device)
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and device in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.safetensors"]


def test_bad_base_files_are_one_line(tmp_path):
    path, names = crafted_file(tmp_path, {"a": [1.0, 0.5]})
    (tmp_path / "junk.safetensors").write_bytes(b"\x07" * 64)
    m = read(path).modules[0]
    save_file({"model." + m.target.key: torch.tensor(1.0)}, str(tmp_path / "scalar.safetensors"))
    for name in ("junk", "scalar"):
        r = run_cli(path, "--fro-ckpt", "-3", "--base", tmp_path / f"{name}.safetensors", "--norm-cache", tmp_path / "c")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("crafted-resized*"))


def test_recipe_on_the_command_line(tmp_path):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM})
    lora = read(path)
    bp, _ = base_for(lora, names, {"a": 5.0}, tmp_path)
    r = run_cli(path, "--recipe", "fro_ckpt=1,thr=-2.5", "--base", bp, "--norm-cache", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    # keep σ >= 10^-2.5 · 5 = 0.0158: 1, 0.3, 0.1, 0.03 -> rank 4
    assert "6    -> 4" in r.stdout.replace("  ", " ") or "-> 4" in r.stdout
    r = run_cli(path, "--recipe", "fro_ckpt=1,thr=-2.5")
    assert r.returncode == 2 and "needs --base" in r.stderr


def test_unknown_keys_reported_and_report_order(tmp_path):
    path, names = crafted_file(tmp_path, {"a": SPECTRUM})
    sd = load_file(str(path))
    sd["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.randn(3072, 2)
    sd["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.randn(2, 768)
    sd["some_embedding.vector"] = torch.randn(4)
    p = synth.write(tmp_path / "mixed.safetensors", sd)
    out, report = resize(read(p), Rule("rank", 1), device="cpu")
    assert any("some_embedding.vector" in w for w in report["warnings"])
    assert "some_embedding.vector" in out.store.keys()
    text = render_report(report)
    lines = text.splitlines()
    assert lines[1].startswith("Per block")
    te = next(i for i, x in enumerate(lines) if "lora_te1_" in x)
    unet = next(i for i, x in enumerate(lines) if names["a"][:40] in x)
    assert unet < te


def test_rank_mismatch_names_the_module(tmp_path):
    path, names = crafted_file(tmp_path, {"a": [1.0, 0.5], "b": [1.0]})
    sd = load_file(str(path))
    sd[names["b"] + ".lora_up.weight"] = torch.randn(640, 3)
    p = synth.write(tmp_path / "mismatch.safetensors", sd)
    try:
        lora = read(p)
    except ChopShopError as e:   # refused at reading is fine too, as long as the module is named
        assert names["b"] in str(e)
        return
    with pytest.raises(ChopShopError, match=names["b"]):
        resize(lora, Rule("rank", 1), device="cpu")


def test_broken_module_is_refused_by_name(tmp_path):
    from core.lora_file import Problem
    path, names = crafted_file(tmp_path, {"a": SPECTRUM, "b": SPECTRUM})
    lora = read(path)
    m = next(x for x in lora.modules if x.base == names["b"])
    m.problems.append(Problem(Problem.BROKEN, "unusable tensors"))
    with pytest.raises(ChopShopError, match=names["b"]):
        resize(lora, Rule("rank", 1), dtype="fp32", device="cpu")
