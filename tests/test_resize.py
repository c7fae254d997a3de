"""SVD Resize against a dense-SVD oracle: best rank-k per adapter type, rank rules, outputs, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from chopshop_dev import synth
from oracles import best_rank_k, dense_delta, rel_err

from core.errors import ChopShopError
from core.lora_file import read
from core.resize import Rule, resize, resize_file
from core import base_model

ROOT = Path(__file__).resolve().parent.parent
L = synth.layers("shapes_sdxl_unet")
PLAN = [  # (layer, adapter, rank)
    ("diffusion_model.input_blocks.4.1.proj_in", "lora", 6),
    ("diffusion_model.input_blocks.1.0.in_layers.2", "locon", 6),
    ("diffusion_model.input_blocks.2.0.in_layers.2", "tucker", 6),
    ("diffusion_model.input_blocks.5.1.proj_in", "loha", 4),
    ("diffusion_model.output_blocks.3.1.proj_out", "lokr", 4),
    ("diffusion_model.output_blocks.6.0.emb_layers.1", "full", 0),
]


def module(sd: dict, base: str) -> dict:
    return {k[len(base) + 1:]: v for k, v in sd.items() if k.startswith(base + ".")}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    gen = torch.Generator().manual_seed(3)
    sd = {}
    for layer, adapter, r in PLAN:
        for suffix, t in synth.module_tensors(L[layer], adapter, r, gen, alpha=3.0, dtype=torch.float32).items():
            sd[synth.kohya_unet(layer) + suffix] = t
    return synth.write(tmp_path_factory.mktemp("mixed") / "mixed.safetensors", sd), sd


@pytest.mark.parametrize("k", [1, 3])
def test_every_adapter_type_is_best_rank_k(mixed, k):
    path, sd = mixed
    lora = read(path)
    out, report = resize(lora, Rule("rank", k), dtype="fp32", device="cpu", size_guard=False)
    out_sd = {key: out.store.tensor(key) for key in out.store.keys()}
    kinds = set()
    for m in lora.modules:
        d_in = dense_delta(module(sd, m.base))
        t_out = module(out_sd, m.base)
        assert "lora_up.weight" in t_out and "lora_down.weight" in t_out, (m.base, sorted(t_out))
        assert not any(r.startswith(("hada_", "lokr_", "lora_mid", "diff")) for r in t_out)
        assert t_out["lora_down.weight"].shape[0] == k
        d_out = dense_delta(t_out)
        assert rel_err(d_out, best_rank_k(d_in, k)) < 1e-4, m.base
        kinds.add(m.kind)
        layer = next(lr for lr in report["layers"] if lr["name"] == m.base)
        S = torch.linalg.svdvals(d_in)
        assert layer["fro_retention"] == pytest.approx(float(torch.sqrt((S[:k] ** 2).sum() / (S ** 2).sum())), rel=1e-4)
    assert kinds == {"lora", "locon", "tucker", "loha", "lokr", "full"}


def test_conv_kernel_stays_on_down(mixed):
    path, _ = mixed
    out, _ = resize(read(path), Rule("rank", 2), dtype="fp32", device="cpu", size_guard=False)
    base = synth.kohya_unet("diffusion_model.input_blocks.2.0.in_layers.2")
    assert tuple(out.store.tensor(base + ".lora_down.weight").shape) == (2, 320, 3, 3)
    assert tuple(out.store.tensor(base + ".lora_up.weight").shape) == (320, 2, 1, 1)


def test_size_guard_keeps_lokr_and_loha_when_conversion_is_bigger(mixed):
    path, sd = mixed
    out, report = resize(read(path), Rule("rank", 64), dtype="fp32", device="cpu")
    by = {lr["name"]: lr for lr in report["layers"]}
    lokr = synth.kohya_unet("diffusion_model.output_blocks.3.1.proj_out")
    assert by[lokr]["outcome"] == "size-guarded"
    assert torch.equal(out.store.tensor(lokr + ".lokr_w1"), sd[lokr + ".lokr_w1"])


def spectral_lora(S: list[float], out=64, in_=48, alpha=None, seed=0) -> dict[str, torch.Tensor]:
    """A LoRA module whose ΔW has exactly the singular values S."""
    g = torch.Generator().manual_seed(seed)
    r = len(S)
    U = torch.linalg.qr(torch.randn(out, r, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(in_, r, generator=g, dtype=torch.float64))[0]
    up = U * torch.tensor(S, dtype=torch.float64)
    t = {"lora_up.weight": up.float().contiguous(), "lora_down.weight": V.T.contiguous().float()}
    if alpha is not None:
        t["alpha"] = torch.tensor(float(alpha))
        t["lora_up.weight"] = (t["lora_up.weight"] * r / alpha).contiguous()  # keep ΔW's spectrum = S
    return t


def crafted_file(tmp_path, spectra: dict[str, list[float]], alpha=None, layer_shape=(640, 2048)):
    """Modules on SDXL cross-attention k/v layers (context 2048: no other architecture has that shape)."""
    layers = [k for k, s in L.items() if s == layer_shape][: len(spectra)]
    sd = {}
    names = {}
    for (label, S), layer in zip(spectra.items(), layers):
        base = synth.kohya_unet(layer)
        names[label] = base
        for suffix, t in spectral_lora(S, *layer_shape, alpha=alpha, seed=len(sd)).items():
            sd[f"{base}.{suffix}"] = t
    return synth.write(tmp_path / "crafted.safetensors", sd), names


S0 = [3, 2, 1, 0.5, 0, 0, 0, 0]


@pytest.mark.parametrize("rule,expected", [
    (Rule("sv_fro", 0.9), 2), (Rule("sv_fro", 0.99), 3), (Rule("sv_cumulative", 0.8), 3),
    (Rule("sv_ratio", 2.5), 2), (Rule("sv_ratio", 10), 4), (Rule("rank", 6), 4), (Rule("rank", 2), 2),
    (Rule("sv_fro", 0.9, kohya_compatible=True), 3), (Rule("sv_ratio", 10, kohya_compatible=True), 4),
    (Rule("sv_fro", 1.0, max_rank=1), 1),
])
def test_rules_on_crafted_spectra(tmp_path, rule, expected):
    path, names = crafted_file(tmp_path, {"a": S0}, alpha=4)
    _, report = resize(read(path), rule, dtype="fp32", device="cpu")
    layer = report["layers"][0]
    assert layer["rank_out"] == expected if expected < 8 else True
    if expected == 4 and rule.mode == "rank":
        assert layer["outcome"] == "resized"  # rank-deficient: exact at its true rank 4, never padded to 6


def test_ties_zero_layers_and_rank_above_min_dim(tmp_path):
    path, names = crafted_file(tmp_path, {"tie": [2, 1, 1, 1, 0.5], "zero": [0, 0, 0], "ok": [1, 0.5]})
    out, report = resize(read(path), Rule("sv_fro", 0.8), dtype="fp32", device="cpu")
    by = {lr["name"]: lr for lr in report["layers"]}
    tie = by[names["tie"]]
    # ρ_F² = (4+1+1)/7.25 = 0.83 >= 0.64 at k=2; minimal k with ρ_F>=0.8: 4/7.25=0.55 (k=1) < .64 <= 5/7.25 -> 2
    assert tie["rank_out"] == 2
    assert by[names["zero"]]["outcome"] == "zero-dropped"
    assert not [k for k in out.store.keys() if k.startswith(names["zero"])]
    # a fixed rank above min(out, in') caps at the layer's real rank, no IndexError
    small = {"x.lora_up.weight": torch.randn(4, 16), "x.lora_down.weight": torch.randn(16, 3)}
    layer = next(k for k, s in L.items() if len(s) == 2 and s[1] >= 3)
    base = synth.kohya_unet(layer)
    out_, in_ = L[layer]
    g = torch.Generator().manual_seed(1)
    sd = {f"{base}.lora_up.weight": torch.randn(out_, 16, generator=g), f"{base}.lora_down.weight": torch.randn(16, in_, generator=g)}
    p = synth.write(tmp_path / "wide.safetensors", sd)
    _, rep = resize(read(p), Rule("rank", 12), dtype="fp32", device="cpu")
    assert rep["layers"][0]["rank_out"] == 12


def test_alpha_and_scale_preserved_and_naming_kept(tmp_path):
    layer = "diffusion_model.input_blocks.4.1.proj_in"
    base = "unet.down_blocks.1.attentions.0.proj_in"
    g = torch.Generator().manual_seed(2)
    sd = {f"{base}.lora_B.weight": torch.randn(640, 8, generator=g), f"{base}.lora_A.weight": torch.randn(8, 640, generator=g)}
    p = synth.write(tmp_path / "peft.safetensors", sd)
    lora = read(p)
    assert lora.modules[0].block == "INP04"
    out, _ = resize(lora, Rule("rank", 3), dtype="fp32", device="cpu")
    keys = set(out.store.keys())
    assert keys == {f"{base}.lora_B.weight", f"{base}.lora_A.weight"}  # PEFT names, no alpha added (γ = 1)
    d = out.store.tensor(f"{base}.lora_B.weight").double() @ out.store.tensor(f"{base}.lora_A.weight").double()
    assert rel_err(d, best_rank_k(dense_delta(module(sd, base)), 3)) < 1e-4
    # √σ split: both factors carry the same column/row norms
    up, down = out.store.tensor(f"{base}.lora_B.weight"), out.store.tensor(f"{base}.lora_A.weight")
    assert torch.allclose(up.norm(dim=0), down.norm(dim=1), rtol=1e-4)


def test_fro_ckpt_uses_base_norms(tmp_path):
    path, names = crafted_file(tmp_path, {"a": [1.0, 0.1, 0.01, 0.001], "b": [1.0, 0.1, 0.01, 0.001]})
    lora = read(path)
    base = {}
    norms = {"a": 5.0, "b": 500.0}
    for label, mod in names.items():
        m = next(x for x in lora.modules if x.base == mod)
        W = torch.randn(*m.target.shape)
        base["model." + m.target.key] = W / W.norm() * norms[label]
    bp = tmp_path / "base.safetensors"
    save_file(base, str(bp))
    _, report = resize(lora, Rule("fro_ckpt", -3), dtype="fp32", device="cpu", base=base_model.from_file(bp))
    by = {lr["name"]: lr for lr in report["layers"]}
    # keep σ >= 1e-3 * ||W0||: a: >= 0.005 -> 3 ; b: >= 0.5 -> 1
    assert by[names["a"]]["rank_out"] == 3 and by[names["b"]]["rank_out"] == 1


def test_fro_ckpt_refuses_wrong_base(tmp_path):
    path, names = crafted_file(tmp_path, {"a": [1.0, 0.1]})
    lora = read(path)
    bp = tmp_path / "flux.safetensors"
    save_file({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": torch.zeros(9, 3)}, str(bp))
    with pytest.raises(ChopShopError, match="lacks 1 of the 1 layers"):
        resize(lora, Rule("fro_ckpt", -3), device="cpu", base=base_model.from_file(bp))
    m = lora.modules[0]
    save_file({"model." + m.target.key: torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ChopShopError, match="not a sdxl model"):
        resize(lora, Rule("fro_ckpt", -3), device="cpu", base=base_model.from_file(tmp_path / "other.safetensors"))


def test_size_rule_meets_target(tmp_path):
    spectra = {str(i): [1.0 / (j + 1) for j in range(16)] for i in range(6)}
    path, _ = crafted_file(tmp_path, spectra)
    target_mib = path.stat().st_size / 2 ** 20 / 4
    r = resize_file(path, Rule("size", target_mib), dtype="fp32", device="cpu")
    assert r["bytes_out"] <= target_mib * 2 ** 20 * 1.02
    assert r["bytes_out"] > target_mib * 2 ** 20 * 0.5


@pytest.mark.parametrize("args,pattern", [
    (["--rank", "0"], "rank must be"), (["--rank", "-2"], "rank must be"),
    (["--sv-fro", "1.5"], r"sv_fro must be in \(0, 1\]"), (["--sv-fro", "0"], r"sv_fro must be in \(0, 1\]"),
    (["--sv-ratio", "0.5"], "sv_ratio must be"), (["--fro-ckpt", "-3"], "needs --base"),
])
def test_bad_parameters_write_nothing(tmp_path, args, pattern):
    path, _ = crafted_file(tmp_path, {"a": [1.0, 0.5]})
    r = subprocess.run([sys.executable, "-m", "core", "resize", str(path), *args, "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    import re
    assert re.search(pattern, r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.safetensors"]


def test_batch_of_same_shaped_modules_each_best_rank_k(tmp_path):
    """Same-shaped modules are resized as one batch (kept factors built at the batch's largest rank, then cut):
    every module is still its own best rank-k approximation, with its own k, and its factors are balanced."""
    spectra = {f"m{i}": [2.0 ** -(j * (i + 1) / 4) for j in range(8)] for i in range(5)}
    spectra["deficient"] = [1.0, 0.5, 0.25, 0, 0, 0, 0, 0]
    path, names = crafted_file(tmp_path, spectra, alpha=4, layer_shape=(640, 640))
    lora = read(path)
    svds = {}
    for base in names.values():
        D = dense_delta({s[len(base) + 1:]: lora.store.tensor(s) for s in lora.store.keys() if s.startswith(base + ".")})
        svds[base] = torch.linalg.svd(D.T, full_matrices=False)   # tall orientation: D = Vh.T diag(S) U.T
    for dtype, tol in (("fp32", 1e-4), ("fp16", 2e-3)):
        out, report = resize(lora, Rule("sv_fro", 0.95), dtype=dtype, device="cpu")
        by = {lr["name"]: lr for lr in report["layers"]}
        assert len({by[n]["rank_out"] for n in names.values()}) >= 3
        for base, (U, S, Vh) in svds.items():
            k = by[base]["rank_out"]
            want = ((U[:, :k] * S[:k]) @ Vh[:k]).T
            t = {s[len(base) + 1:]: out.store.tensor(s) for s in out.store.keys() if s.startswith(base + ".")}
            assert t["lora_down.weight"].shape[0] == k and t["lora_up.weight"].dtype == out_dtypes[dtype]
            assert rel_err(dense_delta(t), want) < tol, (base, dtype)
            up, down = t["lora_up.weight"].float(), t["lora_down.weight"].float()
            assert torch.allclose(up.norm(dim=0), down.norm(dim=1), rtol=10 * tol)


out_dtypes = {"fp32": torch.float32, "fp16": torch.float16}


def test_nan_module_is_named(tmp_path):
    path, names = crafted_file(tmp_path, {"a": [1.0, 0.5], "b": [1.0]})
    sd = load_file(str(path))
    sd[names["b"] + ".lora_up.weight"][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(sd, str(bad))
    r = subprocess.run([sys.executable, "-m", "core", "resize", str(bad), "--rank", "1", "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode != 0 and names["b"] in r.stderr and "NaN" in r.stderr
    assert not list(tmp_path.glob("nan-resized*"))


def test_cli_json_contract_and_metadata(tmp_path):
    path, names = crafted_file(tmp_path, {"a": S0, "b": [1.0, 0.5, 0.25]}, alpha=2)
    meta_in = {"ss_network_dim": "8", "ss_network_alpha": "2", "ss_training_comment": "orig"}
    sd = load_file(str(path))
    save_file(sd, str(tmp_path / "m.safetensors"), metadata=meta_in)
    r = subprocess.run([sys.executable, "-m", "core", "resize", str(tmp_path / "m.safetensors"), "--sv-fro", "0.9",
                        "--json", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"output", "layers", "fro_retention_mean", "fro_retention_weighted", "bytes_in", "bytes_out", "seconds"} <= set(d)
    assert all({"name", "rank_in", "rank_out", "fro_retention"} <= set(lr) for lr in d["layers"])
    assert len(d["layers"]) == 2
    out = Path(d["output"])
    assert out.name == "m-resized.safetensors"
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if not k.endswith(".alpha")}
    assert meta["ss_network_dim"] == "Dynamic" and meta["ss_network_alpha"] == "Dynamic"
    assert meta["ss_training_comment"].endswith("; orig")
    assert json.loads(meta["chopshop"])[-1]["operation"] == "resize"
    assert len(meta["sshs_model_hash"]) == 64
    assert dtypes == {torch.float16}  # default output dtype


def test_passthrough_of_unresizable_modules(tmp_path):
    layer = "diffusion_model.input_blocks.4.1.proj_in"
    base = synth.kohya_unet(layer)
    sd = {f"{base}.oft_blocks": torch.randn(4, 160, 160), f"{base}.alpha": torch.tensor(1.0),
          "lora_unet_input_blocks_4_1_proj_out.lora_up.weight": torch.randn(640, 4),
          "lora_unet_input_blocks_4_1_proj_out.lora_down.weight": torch.randn(4, 640),
          "bundle_emb.token.string_to_param.*": torch.randn(2, 768)}
    p = synth.write(tmp_path / "oft.safetensors", sd)
    out, report = resize(read(p), Rule("rank", 2), dtype="fp32", device="cpu")
    assert torch.equal(out.store.tensor(f"{base}.oft_blocks"), sd[f"{base}.oft_blocks"])
    assert "bundle_emb.token.string_to_param.*" in out.store.keys()
    assert any("passed through" in w for w in report["warnings"])
