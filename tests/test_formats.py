"""Every naming style x architecture of formats.md §4.1: detection, format label, resolution, block layout,
pass-through, energies — each checked against an independent count or formula written here.

The files come from ``chopshop_dev/synth.py``: module names spelled by each trainer's own rule from the real layer
tables in ``core/data``; the generator records which model layer (and fused slice) every name was made for.
The block of a layer is computed in this test with the block patterns of blocks.md §5 (not the reader's).
"""
from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from chopshop_dev import synth  # noqa: E402

from core.inspect_report import inspect  # noqa: E402
from core.lora_file import from_tensors, read  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "core" / "data"

# ------------------------------------------------------------------------------------ independent block rules
# blocks.md §5: container of numbered blocks in the ComfyUI model key -> label prefix, in model order.
_UNET = (r"^diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)\.",
         {"input_blocks": "INP", "middle_block": "MID", "output_blocks": "OUT"})
_DS = (r"^diffusion_model\.(double_blocks|single_blocks)\.(\d+)\.", {"double_blocks": "D", "single_blocks": "S"})
BLOCK_RULES = {
    "sd15": _UNET, "sdxl": _UNET, "flux": _DS, "chroma": _DS, "hunyuan_video": _DS,
    "wan21_1_3b": (r"^diffusion_model\.(blocks)\.(\d+)\.", {"blocks": "B"}),
    "wan21_14b": (r"^diffusion_model\.(blocks)\.(\d+)\.", {"blocks": "B"}),
    "qwen_image": (r"^diffusion_model\.(transformer_blocks)\.(\d+)\.", {"transformer_blocks": "B"}),
    "z_image": (r"^diffusion_model\.(layers)\.(\d+)\.", {"layers": "B"}),     # refiners: non-block (§7.2)
    "sd3_medium": (r"^diffusion_model\.(joint_blocks)\.(\d+)\.", {"joint_blocks": "B"}),
    "sd35_medium": (r"^diffusion_model\.(joint_blocks)\.(\d+)\.", {"joint_blocks": "B"}),
    "sd35_large": (r"^diffusion_model\.(joint_blocks)\.(\d+)\.", {"joint_blocks": "B"}),
}
SECTION_RANK = {"INP": 0, "MID": 1, "OUT": 2, "D": 0, "S": 1, "B": 0}


def block_label(arch: str, layer: str) -> str | None:
    pattern, prefixes = BLOCK_RULES[arch]
    m = re.match(pattern, layer)
    return f"{prefixes[m.group(1)]}{int(m.group(2)):02d}" if m else None


def model_order(labels) -> list[str]:
    return sorted(set(labels), key=lambda s: (SECTION_RANK[s.rstrip("0123456789")], int(re.sub(r"^[A-Z]+", "", s))))


# The format label the reader gives each style (formats.md §4.1; styles that write the same names as another
# trainer cannot be told apart and get that trainer's label).
def expected_format(style: str, arch: str) -> str:
    if style == "ai_toolkit":
        return "peft" if arch in ("flux", "sd3_medium", "sd35_large") else "ai-toolkit"   # transformer. prefix
    if style == "musubi":
        return "kohya" if arch == "flux" else "musubi"          # musubi Flux = kohya Flux names
    if style == "onetrainer":
        return "kohya" if arch in synth.UNET_ARCHS else "onetrainer"   # OneTrainer SD/SDXL = kohya names
    return {"kohya_diffusers": "kohya", "wan_fun": "musubi", "diffusion_pipe": "peft",
            "diffusers_old": "diffusers-old", "simpletuner_lycoris": "simpletuner-lycoris"}.get(style, style)


CASES = [(s, a) for s, archs in synth.STYLE_ARCHS.items() for a in archs]
IDS = [f"{s}-{a}" for s, a in CASES]


@pytest.fixture(scope="session")
def style_files(tmp_path_factory):
    torch.set_num_threads(1)       # tiny ops: many times faster on a busy 2-core machine
    d = tmp_path_factory.mktemp("styles")
    out = {}
    for i, (style, arch) in enumerate(CASES):
        spec = synth.make_style(style, arch, rank=2, seed=i)
        out[(style, arch)] = (synth.write(d / f"{style}-{arch}.safetensors", spec.sd), spec)
    return out


@pytest.fixture(scope="session")
def reports(style_files):
    out = {}
    for case, (path, spec) in style_files.items():
        lora = read(path)
        out[case] = (lora, inspect(lora, energies=True))
    return out


def _gz(stem):
    with gzip.open(DATA / f"{stem}.json.gz", "rt") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------ the tests

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_detects_architecture_and_format(reports, case):
    style, arch = case
    lora, rep = reports[case]
    assert rep["architecture"] == arch
    assert rep["format"] == expected_format(style, arch)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_module_resolves(reports, style_files, case):
    lora, rep = reports[case]
    spec = style_files[case][1]
    assert rep["unresolved_count"] == 0, rep["unresolved"][:5]
    assert rep["pass_through"]["unknown_key_count"] == 0
    assert rep["modules"] == len(spec.mods)
    assert rep["tensors"] == len(spec.sd)
    for m in lora.modules:
        assert m.target is not None, m.base


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_block_layout_matches_independent_count(reports, style_files, case):
    style, arch = case
    lora, rep = reports[case]
    spec = style_files[case][1]
    want_mod, want_ten = defaultdict(int), defaultdict(int)
    pass_mod = pass_ten = 0
    for m in spec.mods:
        lab = block_label(arch, m.layer)
        if lab is None:
            pass_mod += 1
            pass_ten += len(m.keys)
        else:
            want_mod[lab] += 1
            want_ten[lab] += len(m.keys)
    labels = model_order(want_mod)
    assert [b["label"] for b in rep["blocks"]] == labels
    assert {b["label"]: b["modules"] for b in rep["blocks"]} == dict(want_mod)
    assert {b["label"]: b["tensors"] for b in rep["blocks"]} == dict(want_ten)
    assert [b["index"] for b in rep["blocks"]] == list(range(len(labels)))
    assert rep["vector_template"] == ",".join(["1", *labels])
    assert rep["pass_through"]["modules"] == pass_mod
    assert rep["pass_through"]["tensors"] == pass_ten
    te = [m for m in spec.mods if m.component != "unet"]
    assert rep["pass_through"]["text_encoder_modules"] == len(te)
    assert rep["pass_through"]["other_modules"] == pass_mod - len(te)
    kinds = defaultdict(int)
    for m in spec.mods:
        kinds[synth.ADAPTER_NAMES[m.kind]] += 1
    assert rep["adapter_counts"] == dict(kinds)
    # the modules the generator made for non-block layers (time_embed, img_in, final_layer, Z-Image refiners,
    # Chroma's distilled_guidance_layer ...) are exactly the "other" pass-through modules
    other = sorted(m.name for m in spec.mods if m.component == "unet" and block_label(arch, m.layer) is None)
    assert rep["pass_through"]["other"] == other[:50]
    if style != "diffusers_old":        # the attention-processor era wrapped attention projections only
        assert other, "each file has a few non-block layers"


# Names ComfyUI's own key map (core/data/lorakeys_*.json.gz) does not list, by documented reason.
NOT_IN_COMFY_MAP = [
    (r"^unet\..*\.attn[12]\.(to_[qkv]|to_out\.0)$",
     "diffusers/PEFT attention names: ComfyUI's map lists them only as '...processor.to_q' (formats.md §4.2)"),
    (r"^lora_unet__", "Wan 'Fun' double underscore: ComfyUI rewrites lora_unet__ -> lora_unet_ before lookup"),
    (r"^lora_unet_((layers|noise_refiner|context_refiner)_\d+_attention_(to_[qkv]|to_out_0)|all_(x_embedder|final_layer)_2-1)",
     "musubi Z-Image split q/k/v: needs musubi's convert_z_image_lora_to_comfy.py (formats.md §4.1)"),
    (r"^(blocks\.\d+|text_embedding|time_embedding|time_projection|head|patch_embedding|img_emb)\.",
     "DiffSynth bare Wan names: the Wan map has no bare family (resolved via diffusion_model.)"),
    (r"^(lora_te[23]_encoder_|text_encoders\.t5xxl\.)", "T5: no T5 key map is shipped; resolved by layer name"),
]


def _documented(name: str) -> bool:
    return any(re.search(p, name) for p, _ in NOT_IN_COMFY_MAP)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_names_are_comfyui_keys_and_blocks_agree(reports, style_files, case):
    style, arch = case
    lora, rep = reports[case]
    spec = style_files[case][1]
    km = _gz(synth.ARCH_DATA[arch][1])
    clip = _gz("lorakeys_sd15_clip" if arch == "sd15" else "lorakeys_sdxl_clip")
    by_base = {m.base: m for m in lora.modules}
    for mod in spec.mods:
        got = by_base[mod.name]
        if mod.component == "unet":
            if mod.name in km:
                value = km[mod.name]
                target = value if isinstance(value, str) else value[0]
            else:
                assert _documented(mod.name), f"{mod.name} is not a ComfyUI key and no documented spelling"
                target = mod.layer + ".weight"
            assert target.removesuffix(".weight") == mod.layer
            assert got.block == block_label(arch, target), mod.name
            assert got.target.key == target
            if mod.slice is not None:
                assert tuple(got.target.slice) == tuple(mod.slice)
        else:
            if mod.name in clip:
                assert clip[mod.name] == mod.layer + ".weight"
            else:
                assert _documented(mod.name), mod.name
            assert got.block is None and got.is_text_encoder
            assert got.component == mod.component


def test_label_order_is_numeric(reports):
    sd15 = [b["label"] for b in reports[("kohya", "sd15")][1]["blocks"]]
    assert sd15.index("OUT09") < sd15.index("OUT10") < sd15.index("OUT11")
    assert sd15.index("INP11") < sd15.index("MID00") < sd15.index("OUT02")
    wan = [b["label"] for b in reports[("musubi", "wan21_14b")][1]["blocks"]]
    assert wan == ["B00", "B02", "B10", "B39"]
    flux = [b["label"] for b in reports[("kohya", "flux")][1]["blocks"]]
    assert flux == ["D00", "D02", "D10", "D18", "S00", "S09", "S37"]
    z = [b["label"] for b in reports[("comfyui", "z_image")][1]["blocks"]]
    assert z == ["B00", "B02", "B10", "B29"]          # refiners are pass-through


def test_block_names(reports):
    names = {b["label"]: b["name"] for b in reports[("kohya", "sdxl")][1]["blocks"]}
    assert names["INP04"] == "input_blocks.4" and names["MID02"] == "middle_block.2"
    names = {b["label"]: b["name"] for b in reports[("musubi", "qwen_image")][1]["blocks"]}
    assert names["B59"] == "transformer_blocks.59"
    names = {b["label"]: b["name"] for b in reports[("kohya", "sd3_medium")][1]["blocks"]}
    assert names["B23"] == "joint_blocks.23"


# ------------------------------------------------------------------------------------------ energy oracle

def _f(t):
    return t.double()


def _row_chunks(B: torch.Tensor, A: torch.Tensor, rows: int = 1024):
    """The dense product B @ A, one block of rows at a time (big DiT layers would need GBs at once)."""
    for i in range(0, B.shape[0], rows):
        yield B[i:i + rows] @ A


# Dense ΔW up to this many elements. Bigger DiT layers (Wan 14B FFN: 70M elements) would take minutes on a
# busy 2-core CPU; for those the oracle uses exact identities instead: ‖B A‖² = Σ (BᵀB) ⊙ (A Aᵀ) and
# ‖kron(w1, w2)‖² = ‖w1‖² ‖w2‖², still from the raw tensors with the formats.md scale rules.
DENSE_LIMIT = 1_000_000


def oracle_energy_dense(kind: str, t: dict[str, torch.Tensor]) -> float:
    """‖ΔW‖² by building ΔW densely (in row blocks) with the formulas of formats.md §2."""
    alpha = float(t["alpha"]) if "alpha" in t else None
    if kind in ("lora", "locon", "dora"):
        down, up = _f(t["lora_down.weight"]).flatten(1), _f(t["lora_up.weight"]).flatten(1)
        if up.shape[0] * down.shape[1] > DENSE_LIMIT:
            g = alpha / down.shape[0] if alpha is not None else 1.0
            return g * g * float(((up.T @ up) * (down @ down.T)).sum())
    if kind == "lokr" and "lokr_w1" in t and "lokr_w2_a" in t and "lokr_t2" not in t:
        w1, w2 = _f(t["lokr_w1"]), _f(t["lokr_w2_a"]) @ _f(t["lokr_w2_b"])
        if w1.numel() * w2.numel() > DENSE_LIMIT:
            g = alpha / t["lokr_w2_b"].shape[0] if alpha is not None else 1.0
            return g * g * float(w1.pow(2).sum()) * float(w2.pow(2).sum())
    if kind in ("lora", "locon", "dora"):
        down, up = _f(t["lora_down.weight"]).flatten(1), _f(t["lora_up.weight"]).flatten(1)
        g = alpha / down.shape[0] if alpha is not None else 1.0
        return sum(float((g * blk).pow(2).sum()) for blk in _row_chunks(up, down))
    if kind.startswith("lokr") and "lokr_w1" in t and "lokr_w2_a" in t and "lokr_t2" not in t:
        w1 = _f(t["lokr_w1"])
        g = alpha / t["lokr_w2_b"].shape[0] if alpha is not None else 1.0
        w2 = _f(t["lokr_w2_a"]) @ _f(t["lokr_w2_b"])
        return sum(float((g * torch.kron(w1[i:i + 1], w2)).pow(2).sum()) for i in range(w1.shape[0]))
    return float(oracle_delta(kind, t).pow(2).sum())


def oracle_delta(kind: str, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense ΔW from the raw tensors with the formulas of formats.md §2 (ComfyUI's scale rules)."""
    alpha = float(t["alpha"]) if "alpha" in t else None
    if kind in ("lora", "locon", "dora", "tucker"):
        down, up = _f(t["lora_down.weight"]), _f(t["lora_up.weight"])
        g = alpha / down.shape[0] if alpha is not None else 1.0
        if "lora_mid.weight" in t:
            mid = _f(t["lora_mid.weight"])
            d = torch.einsum("op,pjhw,ji->oihw", up.flatten(1), mid, down.flatten(1))
            return g * d.flatten(1)
        return g * (up.flatten(1) @ down.flatten(1))
    if kind in ("loha", "loha_tucker"):
        g = alpha / t["hada_w1_b"].shape[0] if alpha is not None else 1.0
        if "hada_t1" in t:
            m = [torch.einsum("ijhw,jq,ip->pqhw", _f(t[f"hada_t{i}"]), _f(t[f"hada_w{i}_b"]), _f(t[f"hada_w{i}_a"]))
                 for i in (1, 2)]
            return g * (m[0] * m[1]).flatten(1)
        return g * ((_f(t["hada_w1_a"]) @ _f(t["hada_w1_b"])) * (_f(t["hada_w2_a"]) @ _f(t["hada_w2_b"])))
    if kind.startswith("lokr"):
        dim = None
        if "lokr_w1" in t:
            w1 = _f(t["lokr_w1"])
        else:
            w1, dim = _f(t["lokr_w1_a"]) @ _f(t["lokr_w1_b"]), t["lokr_w1_b"].shape[0]
        if "lokr_w2" in t:
            w2 = _f(t["lokr_w2"]).flatten(1)
        elif "lokr_t2" in t:
            w2 = torch.einsum("ijhw,jq,ip->pqhw", _f(t["lokr_t2"]), _f(t["lokr_w2_b"]), _f(t["lokr_w2_a"])).flatten(1)
            dim = t["lokr_w2_b"].shape[0]
        else:
            w2, dim = _f(t["lokr_w2_a"]) @ _f(t["lokr_w2_b"]), t["lokr_w2_b"].shape[0]
        g = alpha / dim if (alpha is not None and dim is not None) else 1.0
        return g * torch.kron(w1.contiguous(), w2.contiguous())
    if kind == "full":
        return _f(t["diff"]).flatten(1)
    raise ValueError(kind)


def oracle_energy(kind: str, t: dict[str, torch.Tensor]) -> float | None:
    """‖ΔW‖² plus the module's additive 1-D deltas (bias diff, norm diffs); None for kinds needing W0."""
    if kind in ("ia3", "glora", "oft", "boft"):
        return None
    extra = sum(float(_f(t[k]).pow(2).sum()) for k in ("diff_b", "w_norm", "b_norm") if k in t)
    if kind == "norm":
        return extra
    return oracle_energy_dense(kind, t) + extra


# every up/down spelling of formats.md §2.1 -> the kohya one
_UPDOWN = {"lora_B.weight": "lora_up.weight", "lora_A.weight": "lora_down.weight",
           "lora_B.default.weight": "lora_up.weight", "lora_A.default.weight": "lora_down.weight",
           "lora.up.weight": "lora_up.weight", "lora.down.weight": "lora_down.weight",
           "lora_linear_layer.up.weight": "lora_up.weight", "lora_linear_layer.down.weight": "lora_down.weight"}


def _module_raw(sd, mod):
    """suffix (kohya spelling, no leading dot) -> tensor of one generated module."""
    out = {}
    for k in mod.keys:
        suf = k[len(mod.name):].lstrip("._")     # "_lora.up.weight" (processor form) -> "lora.up.weight"
        out[_UPDOWN.get(suf, suf)] = sd[k]
    return out


def _check_shares(spec, arch, rep):
    energy = defaultdict(float)
    for mod in spec.mods:
        lab = block_label(arch, mod.layer) if mod.component == "unet" else None
        e = oracle_energy(mod.kind, _module_raw(spec.sd, mod))
        if lab is not None and e is not None:
            energy[lab] += e
    total = sum(energy.values())
    assert total > 0
    for b in rep["blocks"]:
        want = energy[b["label"]] / total
        assert b["energy_share"] == pytest.approx(want, rel=1e-4, abs=1e-12), b["label"]
        assert b["energy"] == pytest.approx(energy[b["label"]], rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_energy_shares_match_dense_oracle(reports, style_files, case):
    _check_shares(style_files[case][1], case[1], reports[case][1])


# ------------------------------------------------------------------------------------------ adapter types

@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    spec = synth.sdxl_adapter_zoo()
    path = synth.write(tmp_path_factory.mktemp("zoo") / "zoo.safetensors", spec.sd)
    lora = read(path)
    return spec, lora, inspect(lora)


def test_adapter_types_are_classified(zoo):
    spec, lora, rep = zoo
    kinds = {m.base: m.kind for m in lora.modules}
    core_kind = {"dora": "lora", "lokr_both": "lokr", "lokr_full": "lokr", "lokr_tucker": "lokr"}
    for mod in spec.mods:
        assert kinds[mod.name] == core_kind.get(mod.kind, mod.kind), mod.name
    want = defaultdict(int)
    for mod in spec.mods:
        want[synth.ADAPTER_NAMES[mod.kind]] += 1
    assert rep["adapter_counts"] == dict(want)
    assert rep["dora_modules"] == 1
    assert rep["unresolved_count"] == 0, rep["unresolved"]
    assert rep["architecture"] == "sdxl"
    # the GroupNorm module (w_norm/b_norm) resolves to the norm weight and is in its block
    norm = next(m for m in lora.modules if m.kind == "norm")
    assert norm.target.key == "diffusion_model.output_blocks.4.1.norm.weight" and norm.block == "OUT04"


def test_adapter_energies_match_oracle(zoo):
    spec, lora, rep = zoo
    _check_shares(spec, "sdxl", rep)
    unmeasured = {b["label"]: b["unmeasured_modules"] for b in rep["blocks"]}
    assert unmeasured["OUT03"] == 2 and unmeasured["OUT04"] == 2     # (IA)^3+GLoRA, OFT+BOFT need W0


def _lycoris():
    try:
        from lycoris.functional import loha, lokr
        return loha, lokr
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"lycoris-lora not importable ({e}); pip install --no-deps lycoris-lora==4.1.3 einops toml")


def test_loha_lokr_oracle_agrees_with_lycoris(zoo):
    """The test's own LoHa/LoKr formulas equal LyCORIS's functional forward (with ComfyUI's γ)."""
    loha, lokr = _lycoris()
    spec, lora, rep = zoo
    checked = 0
    for mod in spec.mods:
        t = {k: v.double() for k, v in _module_raw(spec.sd, mod).items()}
        if mod.kind in ("loha", "loha_tucker"):
            g = float(t["alpha"]) / t["hada_w1_b"].shape[0]
            ref = loha.diff_weight(t["hada_w1_b"], t["hada_w1_a"], t["hada_w2_b"], t["hada_w2_a"],
                                   t.get("hada_t1"), t.get("hada_t2"), gamma=g, backend="torch")
        elif mod.kind.startswith("lokr"):
            dim = None
            if "lokr_w1_b" in t:
                dim = t["lokr_w1_b"].shape[0]
            if "lokr_w2_b" in t:
                dim = t["lokr_w2_b"].shape[0]
            g = float(t["alpha"]) / dim if dim else 1.0
            ref = lokr.kron_weight(t.get("lokr_w1"), t.get("lokr_w1_a"), t.get("lokr_w1_b"), t.get("lokr_w2"),
                                   t.get("lokr_w2_a"), t.get("lokr_w2_b"), t.get("lokr_t2"), scale=g,
                                   backend="torch")
        else:
            continue
        mine = oracle_delta(mod.kind, t)
        assert torch.allclose(mine, ref.reshape(mine.shape[0], -1), rtol=1e-6, atol=1e-12), mod.name
        checked += 1
    assert checked == 7


# ------------------------------------------------------------------------------------------ detection ties

def _detect(sd, metadata=None):
    return from_tensors(sd, metadata).architecture


def test_flux_vs_chroma_tie():
    spec = synth.make_style("ai_toolkit", "chroma", non_block=False, te=False)
    # the same modules fit Flux and Chroma: Flux (the commoner model) unless the metadata names Chroma
    assert _detect(spec.sd) == "flux"
    assert _detect(spec.sd, {"modelspec.architecture": "chroma/lora"}) == "chroma"
    assert _detect(spec.sd, {"ss_base_model_version": "chroma"}) == "chroma"
    # a layer only Chroma has decides without metadata
    full = synth.make_style("comfyui", "chroma", te=False)
    assert _detect(full.sd) == "chroma"
    # modulation layers exist only in Flux: a Flux file with them stays Flux despite a wrong hint
    flux = synth.make_style("kohya", "flux", te=False)
    assert _detect(flux.sd, {"ss_base_model_version": "chroma"}) == "flux"


def test_flux_vs_hunyuan_video_tie():
    hv = synth.make_style("musubi", "hunyuan_video", te=False, non_block=False)
    assert _detect(hv.sd) == "hunyuan_video"                 # blocks 19 / 39 exist only in HunyuanVideo
    low = {k: v for k, v in hv.sd.items() if not re.search(r"_(double_blocks_19|single_blocks_39)_", k)}
    assert _detect(low) == "flux"                            # blocks 0-18 / 0-37 fit both: Flux
    assert _detect(low, {"ss_base_model_version": "hunyuan_video"}) == "hunyuan_video"
    assert _detect(low, {"modelspec.architecture": "hunyuan-video/lora"}) == "hunyuan_video"


def test_sd3_medium_vs_sd35_medium():
    spec = synth.make_style("comfyui", "sd35_medium", te=False)
    assert any(".attn2." in m.layer for m in spec.mods)
    assert _detect(spec.sd) == "sd35_medium"                 # MMDiT-X attn2 exists only in SD3.5 Medium
    assert _detect(spec.sd, {"ss_base_model_version": "sd3"}) == "sd35_medium"
    # the SD3 Medium file: its adaLN widths (6·1536 in blocks 0-12; SD3.5 Medium has 9·1536 there) decide
    sd3 = synth.make_style("comfyui", "sd3_medium", te=False)
    assert _detect(sd3.sd) == "sd3_medium"
    assert _detect(sd3.sd, {"modelspec.architecture": "stable-diffusion-3.5-medium/lora"}) == "sd3_medium"
    # modules of the same shape in both (block 23 attention/MLP): a tie, decided by the most specific hint
    tie = {k: v for k, v in spec.sd.items() if "joint_blocks.23.x_block." in k and "adaLN" not in k}
    assert tie
    assert _detect(tie) == "sd3_medium"
    meta = {"modelspec.architecture": "stable-diffusion-3.5-medium/lora", "ss_base_model_version": "sd3"}
    assert _detect(tie, meta) == "sd35_medium"               # "sd3" matches both; the longer hint wins
    assert _detect(tie, {"modelspec.architecture": "stable-diffusion-3-medium/lora"}) == "sd3_medium"


def test_wan_sizes_by_shape():
    for arch in ("wan21_1_3b", "wan21_14b"):
        spec = synth.make_style("musubi", arch, te=False)
        assert _detect(spec.sd, {"ss_base_model_version": "wan"}) == arch
        lo = {k: v for k, v in spec.sd.items() if "_blocks_0_" in k}   # block 0 only: shapes still decide
        assert _detect(lo) == arch


def test_text_encoder_only_files():
    spec = synth.make_style("kohya", "sdxl", non_block=False)
    te = {k: v for k, v in spec.sd.items() if k.startswith("lora_te")}
    lora = from_tensors(te)
    assert lora.architecture == "sdxl" and lora.format == "kohya"
    rep = inspect(lora, energies=False)
    assert rep["blocks"] == [] and rep["pass_through"]["text_encoder_modules"] == len(lora.modules)


# ------------------------------------------------------------------------------------------- CLI contract

CONTRACT = {"architecture": str, "format": str, "adapter_counts": dict, "blocks": list, "vector_template": str,
            "pass_through": dict, "tensors": int, "modules": int, "metadata": dict}
BLOCK_KEYS = {"index", "name", "label", "tensors", "modules", "energy_share"}


@pytest.mark.parametrize("layout_only", [False, True])
def test_json_cli_contract(style_files, layout_only):
    path, spec = style_files[("musubi", "qwen_image")]
    cmd = [sys.executable, "-m", "core", "inspect", str(path), "--json"] + (["--layout-only"] if layout_only else [])
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    for key, typ in CONTRACT.items():
        assert isinstance(rep[key], typ), key
    assert rep["architecture"] == "qwen_image" and rep["format"] == "musubi"
    assert rep["tensors"] == len(spec.sd) and rep["modules"] == len(spec.mods)
    assert {"tensors", "modules"} <= set(rep["pass_through"])
    assert rep["blocks"]
    for b in rep["blocks"]:
        assert BLOCK_KEYS <= set(b)
        if layout_only:
            assert b["energy_share"] is None
        else:
            assert 0.0 <= b["energy_share"] <= 1.0
    if not layout_only:
        assert math.isclose(sum(b["energy_share"] for b in rep["blocks"]), 1.0, rel_tol=1e-9)


def test_shipped_keymap_stems_match_the_maps():
    """data/keymap_stems.json.gz (detection's quick test) holds exactly what the key maps give."""
    from core.architectures import ARCHITECTURES, keymap_stems, load_data
    shipped = load_data("keymap_stems")
    assert set(shipped) == set(ARCHITECTURES)
    for a in ARCHITECTURES.values():
        assert shipped[a.id] == keymap_stems(a), f"{a.id}: run scripts/build_keymap_stems.py"


def test_quick_model_test_never_skips_a_name_that_resolves(monkeypatch):
    """may_resolve (before any map is parsed) is True for every name that resolves in a model, whichever
    model the name comes from: the ComfyUI map's own names and every trainer spelling of them."""
    import core.architectures as A
    names = set()
    for a in A.ARCHITECTURES.values():
        km = list(A.keymap(a.keymap))
        names |= set(km[::7])
        names |= {"lora_unet_" + n[len("diffusion_model."):].replace(".", "_") for n in km[::11]
                  if n.startswith("diffusion_model.")}
    monkeypatch.setattr(A, "_parsed", set())
    for a in A.ARCHITECTURES.values():
        for n in names:
            if A.resolve_unet(a, n) is not None:
                assert A.may_resolve(a, [n]), (a.id, n)
