"""Structured resize of LoKr and Tucker LoCon modules made by the lycoris-lora package (docs/resize.md §6).

With ``sv_fro 0.9`` each module keeps its own form (LoKr factors truncated, Tucker core truncated) when
that is the smallest, the file gets smaller, and every module keeps >= 90% of its ΔW's Frobenius norm —
measured on ΔW as ComfyUI's own LoRA loader computes it (tests marked comfy), and on a dense oracle here.
"""
from __future__ import annotations

import math

import pytest
import torch

from chopshop_dev import synth
from oracles import dense_delta

from core.lora_file import read
from core.resize import Rule, resize, resize_file

L = synth.layers("shapes_sdxl_unet")
LINEAR = "diffusion_model.input_blocks.4.1.proj_in"          # (640, 640)
LINEAR2 = "diffusion_model.output_blocks.3.1.proj_out"
CONV = "diffusion_model.input_blocks.1.0.in_layers.2"        # (320, 320, 3, 3)


def _lycoris():
    try:
        from lycoris.functional import locon, lokr
    except Exception as e:  # pragma: no cover - the runtime venv has it
        pytest.skip(f"lycoris-lora not importable ({e})")
    return locon, lokr


def _decay(x: torch.Tensor, dim: int, g: torch.Generator) -> torch.Tensor:
    """Fill lycoris' (zero- or kaiming-initialised) factor with values whose rank directions decay, as
    trained factors' do."""
    y = torch.randn(x.shape, generator=g) / math.sqrt(max(x.shape))
    shape = [1] * y.ndim
    shape[dim] = -1
    return y * (0.55 ** torch.arange(y.shape[dim], dtype=torch.float32)).reshape(shape)


def lycoris_file(tmp_path, dtype=torch.float16):
    """One Tucker LoCon (conv), one LoKr with a decomposed W2 and one LoKr with a full W2."""
    locon, lokr = _lycoris()
    g = torch.Generator().manual_seed(11)
    sd = {}
    down, up, mid = locon.weight_gen(torch.empty(L[CONV]), 8, tucker=True)
    base = synth.kohya_unet(CONV)
    sd.update({f"{base}.lora_down.weight": _decay(down, 0, g), f"{base}.lora_up.weight": _decay(up, 1, g),
               f"{base}.lora_mid.weight": torch.randn(mid.shape, generator=g) / 3, f"{base}.alpha": torch.tensor(4.0)})
    for layer, full in ((LINEAR, False), (LINEAR2, True)):
        w1, w1a, w1b, w2, w2a, w2b, t2 = lokr.weight_gen(torch.empty(L[layer]), 64 if full else 8, tucker=False)
        base = synth.kohya_unet(layer)
        assert w1 is not None and t2 is None and (w2 is not None) == full
        sd[f"{base}.lokr_w1"] = _decay(w1, 0, g) * 3
        if full:
            U = torch.linalg.qr(torch.randn(w2.shape[0], w2.shape[0], generator=g))[0]
            sd[f"{base}.lokr_w2"] = (U * 0.7 ** torch.arange(w2.shape[0])) @ torch.randn(w2.shape, generator=g)
        else:
            sd[f"{base}.lokr_w2_a"], sd[f"{base}.lokr_w2_b"] = _decay(w2a, 1, g), _decay(w2b, 0, g)
            sd[f"{base}.alpha"] = torch.tensor(4.0)
    sd = {k: v.to(dtype) if v.ndim else v for k, v in sd.items()}
    return synth.write(tmp_path / "lycoris.safetensors", sd), sd


def module(sd: dict, base: str) -> dict:
    return {k[len(base) + 1:]: v.float() for k, v in sd.items() if k.startswith(base + ".")}


def retention(d_in: torch.Tensor, d_out: torch.Tensor) -> float:
    """sqrt(1 - ‖ΔW - ΔW'‖² / ‖ΔW‖²): the Frobenius retention of an orthogonal truncation, and a lower
    bound on what any approximation keeps."""
    err = float((d_in.double() - d_out.double()).pow(2).sum() / d_in.double().pow(2).sum())
    return math.sqrt(max(0.0, 1.0 - err))


def test_sv_fro_keeps_lokr_and_tucker_in_their_form(tmp_path):
    path, sd = lycoris_file(tmp_path)
    r = resize_file(path, Rule("sv_fro", 0.9), dtype="fp16", device="cpu")
    assert r["bytes_out"] < r["bytes_in"]
    out = read(r["output"])
    out_sd = {k: out.store.tensor(k) for k in out.store.keys()}
    by = {lr["name"]: lr for lr in r["layers"]}
    forms = set()
    for m in read(path).modules:
        lr = by[m.base]
        assert lr["outcome"] == "restructured", lr
        forms.add(lr["form"])
        t_out = module(out_sd, m.base)
        assert not any(k.startswith("lora_up") for k in t_out) or "lora_mid.weight" in t_out
        kept = retention(dense_delta(module(sd, m.base)), dense_delta(t_out))
        assert kept >= 0.9 - 2e-3, (m.base, kept)
        assert lr["fro_retention"] == pytest.approx(kept, abs=3e-3)  # the reported retention is exact
        assert sum(v.numel() for v in t_out.values() if v.ndim) < sum(v.numel() for v in module(sd, m.base).values() if v.ndim)
    assert forms == {"LoKr", "Tucker LoCon"}


def test_size_guard_off_converts_to_best_rank_k(tmp_path):
    path, sd = lycoris_file(tmp_path, torch.float32)
    out, report = resize(read(path), Rule("rank", 3), dtype="fp32", device="cpu", size_guard=False)
    assert {lr["outcome"] for lr in report["layers"]} == {"converted"}


@pytest.mark.comfy
def test_retention_on_comfyui_delta(tmp_path, comfy_inprocess):
    """ΔW before and after, as ComfyUI's comfy.lora computes it: every module keeps >= 0.9."""
    comfy = comfy_inprocess
    path, _ = lycoris_file(tmp_path)
    r = resize_file(path, Rule("sv_fro", 0.9), device="cpu")
    assert r["bytes_out"] < r["bytes_in"]
    from safetensors.torch import load_file

    def comfy_delta(file, layer):
        base = synth.kohya_unet(layer)
        key = layer + ".weight"
        patches = comfy.lora.load_lora(load_file(str(file)), {base: key}, log_missing=False)
        w = torch.zeros(L[layer])
        return comfy.lora.calculate_weight([(1.0, patches[key], 1.0, None, None)], w.clone(), key) - w
    for layer in (CONV, LINEAR, LINEAR2):
        before, after = comfy_delta(path, layer), comfy_delta(r["output"], layer)
        assert float(before.abs().max()) > 0
        assert retention(before, after) >= 0.9 - 2e-3, layer
