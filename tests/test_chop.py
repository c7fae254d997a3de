"""Block Chop and presets: against chop_blocks.py's documented rule, dense deltas, and the presets' vectors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save as st_save

from core.chop import chop, chop_file
from core.errors import ChopShopError
from core.lora_file import read
from core.presets import find_preset, load_presets, preset_rows

from chopshop_dev import synth
from oracles import chop_blocks_kept, chop_blocks_layout, dense_delta

ROOT = Path(__file__).resolve().parent.parent
SDXL_LABELS = ("INP01,INP02,INP03,INP04,INP05,INP06,INP07,INP08,MID00,MID01,MID02,"
               "OUT00,OUT01,OUT02,OUT03,OUT04,OUT05,OUT06,OUT07,OUT08").split(",")
PLAIN_LABELS = "INP04,INP05,INP07,INP08,MID01,OUT00,OUT01,OUT02,OUT03,OUT04,OUT05".split(",")
# Kept UNet tensors per preset on the seed file (blocks.md §6).
SEED_SIZES = {"Heavy Lifter": 318, "Style": 1980, "Might be better": 1827, "by_hamgas": 876, "by_kenket": 2211,
              "by_serpent_x": 1902, "BEEG LAYERS": 2049, "All The Layers": 2364, "All-In": 810, "All-Mid": 324,
              "All-Out (Wolf-Link)": 1230, "Squeak": 1272, "Ringdingding (Stoat)": 1281,
              "Garfield (Character+Style)": 795, "Rutkowski": 2037}
SEED_VECTORS = {  # the exact strings of the guide (shared/seeds/000), Squeak with its trailing space
    "Heavy Lifter": "1,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0",
    "Style": "1,0,0,0,1,1,0,1,1,0,0,0,1,1,1,1,1,1,0,0,0",
    "Might be better": "1,0,0,0,0,0,0,1,1,0,0,0,1,1,1,1,1,1,0,0,0",
    "by_hamgas": "1,0,0,0,0,0,0,0,0,0,0,0,1,0,1,1,1,1,0,0,0",
    "by_kenket": "1,1,1,1,0,0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "by_serpent_x": "1,0,0,0,0,1,0,1,1,0,0,0,1,1,1,1,1,1,0,0,0",
    "BEEG LAYERS": "1,0,0,0,1,1,0,1,1,0,1,0,1,1,1,0,0,0,0,0,0",
    "All The Layers": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "All-In": "1,1,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0",
    "All-Mid": "1,0,0,0,0,0,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0",
    "All-Out (Wolf-Link)": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "Squeak": "1,0,0,0,0,0,0,0,1,0,0,0,1,1,1,0,0,0,0,0,0 ",
    "Ringdingding (Stoat)": "1,0,0,0,0,0,0,0,1,0,0,1,1,1,1,0,0,0,0,0,0",
    "Garfield (Character+Style)": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,1,1,0,0,0",
    "Rutkowski": "1,1,1,1,1,1,0,1,1,0,0,0,1,1,1,1,1,1,1,1,1",
}


@pytest.fixture(scope="session")
def seed_file(tmp_path_factory) -> Path:
    sd = synth.sdxl_lycoris_full(rank=2, conv_rank=2)
    return synth.write(tmp_path_factory.mktemp("seed") / "seed.safetensors", sd, synth.SEED_META)


def plain_sdxl_lora(rank=2, seed=1) -> dict[str, torch.Tensor]:
    """A kohya networks.lora SDXL LoRA: Transformer2DModel layers only (722 UNet modules) + full CLIP-L/G."""
    layers = {k: s for k, s in synth.layers("shapes_sdxl_unet").items()
              if ".1.proj_" in k or ".transformer_blocks." in k}
    sd = synth.build(layers, synth.kohya_unet, "lora", rank, alpha=1.0, seed=seed)
    te = {**synth.clip_all("lora_te1_", "shapes_clip_l"), **synth.clip_all("lora_te2_", "shapes_clip_g")}
    gen = torch.Generator().manual_seed(seed + 1)
    for name, shape in te.items():
        for suffix, t in synth.module_tensors(shape, "lora", rank, gen, alpha=1.0).items():
            sd[name + suffix] = t
    return sd


@pytest.fixture(scope="session")
def plain_file(tmp_path_factory) -> Path:
    return synth.write(tmp_path_factory.mktemp("plain") / "plain.safetensors", plain_sdxl_lora())


def keys_of(path: Path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


def test_oracle_layout_matches_seed(seed_file):
    layout = chop_blocks_layout(keys_of(seed_file))
    assert [f"{s}.{i}" for s, i in layout][:3] == ["input_blocks.1", "input_blocks.2", "input_blocks.3"]
    assert len(layout) == 20
    assert read(seed_file).blocks() == SDXL_LABELS


@pytest.mark.parametrize("name", list(SEED_VECTORS))
def test_seed_presets_keep_what_chop_blocks_keeps(seed_file, name):
    lora = read(seed_file)
    keys = keys_of(seed_file)
    vector = SEED_VECTORS[name]
    expected = chop_blocks_kept(keys, vector.strip())
    for out, _ in (chop(lora, vector=vector), chop(lora, preset=name)):
        kept = set(out.store.keys())
        assert kept == expected
        unet = [k for k in kept if k.startswith("lora_unet_")]
        assert len(unet) == SEED_SIZES[name]
        assert len(kept) - len(unet) == 264  # text-encoder MLPs always kept


def test_shipped_presets_are_the_guides_vectors():
    presets = load_presets()
    for name, vector in SEED_VECTORS.items():
        p = presets[name]
        assert p.layout == "sdxl" and p.description
        values = [float(x) for x in vector.split(",")]
        assert [p.global_weight, *(p.weights[lab] for lab in SDXL_LABELS)] == values


@pytest.mark.parametrize("name", list(SEED_VECTORS))
def test_presets_apply_by_label_to_plain_lora(plain_file, name):
    lora = read(plain_file)
    assert lora.blocks() == PLAIN_LABELS
    out, summary = chop(lora, preset=name)
    values = dict(zip(SDXL_LABELS, [float(x) for x in SEED_VECTORS[name].split(",")[1:]]))
    want_kept = [lab for lab in PLAIN_LABELS if values[lab] == 1]
    assert summary["kept_blocks"] == want_kept
    assert summary["removed_blocks"] == [lab for lab in PLAIN_LABELS if values[lab] == 0]
    kept_blocks = {m.block for m in out.modules if m.block}
    assert kept_blocks == set(want_kept)
    # same as giving the 12-number positional vector of the plain layout
    plain_vector = "1," + ",".join(str(int(values[lab])) for lab in PLAIN_LABELS)
    out2, _ = chop(lora, vector=plain_vector)
    assert set(out2.store.keys()) == set(out.store.keys())
    # and the full-layout 21-number vector by label
    out3, s3 = chop(lora, vector=SEED_VECTORS[name])
    assert s3["mode"] == "by_label" and set(out3.store.keys()) == set(out.store.keys())


def test_plain_lora_equivalences(plain_file):
    lora = read(plain_file)
    k = {n: set(chop(lora, preset=n)[0].store.keys()) for n in ("Squeak", "Ringdingding (Stoat)", "Style", "Rutkowski")}
    assert k["Squeak"] == k["Ringdingding (Stoat)"]  # MID02 does not exist on a plain LoRA
    assert k["Style"] == k["Rutkowski"]


def _module_tensors(sd, base):
    return {k[len(base) + 1:]: v for k, v in sd.items() if k.startswith(base + ".")}


@pytest.fixture(scope="session")
def mixed_file(tmp_path_factory) -> Path:
    """One SDXL block per adapter type: LoRA, LoCon 3x3, Tucker, LoHa, LoKr, full diff (+ DoRA, OFT)."""
    L = synth.layers("shapes_sdxl_unet")
    gen = torch.Generator().manual_seed(7)
    sd = {}
    plan = [
        ("diffusion_model.input_blocks.4.1.proj_in", "lora"),
        ("diffusion_model.input_blocks.1.0.in_layers.2", "locon"),
        ("diffusion_model.input_blocks.2.0.in_layers.2", "tucker"),
        ("diffusion_model.input_blocks.5.1.proj_in", "loha"),
        ("diffusion_model.output_blocks.3.1.proj_out", "lokr"),
        ("diffusion_model.output_blocks.6.0.emb_layers.1", "full"),
    ]
    for layer, adapter in plan:
        for suffix, t in synth.module_tensors(L[layer], adapter, 3, gen, alpha=2.0, dtype=torch.float32).items():
            sd[synth.kohya_unet(layer) + suffix] = t
    return synth.write(tmp_path_factory.mktemp("mixed") / "mixed.safetensors", sd)


@pytest.mark.parametrize("w", [0.5, 0.25, 1.7])
def test_fractional_weight_scales_delta_linearly(mixed_file, w):
    lora = read(mixed_file)
    sd_in = load_file(str(mixed_file))
    labels = lora.blocks()
    vector = "1," + ",".join(str(w) for _ in labels)
    out, summary = chop(lora, vector=vector)
    assert set(summary["scaled_blocks"]) == set(labels)
    kinds = set()
    for m in lora.modules:
        t_in = _module_tensors(sd_in, m.base)
        t_out = {k[len(m.base) + 1:]: out.store.tensor(k) for k in out.store.keys() if k.startswith(m.base + ".")}
        assert set(t_out) == set(t_in)
        assert torch.equal(t_out.get("alpha", torch.tensor(0.)), t_in.get("alpha", torch.tensor(0.)))  # alpha untouched
        changed = [k for k in t_in if not torch.equal(t_in[k], t_out[k])]
        assert len(changed) == 1, (m.base, changed)  # exactly one factor scaled
        d_in, d_out = dense_delta(t_in), dense_delta(t_out)
        assert torch.allclose(d_out, w * d_in, rtol=1e-5, atol=1e-7 * float(d_in.abs().max()))
        kinds.add(m.kind)
    assert kinds == {"lora", "locon", "tucker", "loha", "lokr", "full"}


def test_global_weight_multiplies_block_weights(mixed_file):
    lora = read(mixed_file)
    n = len(lora.blocks())
    out, s = chop(lora, vector="0.5," + ",".join(["1"] * n))
    assert s["scaled_blocks"] == {lab: 0.5 for lab in lora.blocks()}
    with pytest.raises(ChopShopError, match="removes every tensor"):  # global 0 and no text encoder left
        chop(lora, vector="0," + ",".join(["1"] * n))


def test_file_output_bytes_metadata_and_hashes(seed_file, tmp_path):
    src = tmp_path / "in.safetensors"
    src.write_bytes(seed_file.read_bytes())
    before = src.read_bytes()
    result = chop_file(src, preset="Garfield (Character+Style)")
    out = Path(result["output"])
    assert out == tmp_path / "in-chop.safetensors"
    assert src.read_bytes() == before  # input untouched
    # kept tensors byte-identical (same dtype and values)
    a, b = load_file(str(src)), load_file(str(out))
    for k, v in b.items():
        assert v.dtype == a[k].dtype and torch.equal(v, a[k])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["block_vector_string"].startswith("1,")
    assert meta["ss_network_module"] == "lycoris.kohya"
    history = json.loads(meta["chopshop"])
    assert history[-1]["preset"] == "Garfield (Character+Style)" and history[-1]["operation"] == "chop"
    # sshs hashes: the reference definition over the ss_*-only serialization
    reduced = st_save(b, metadata={k: v for k, v in meta.items() if k.startswith("ss_")})
    n = int.from_bytes(reduced[:8], "little")
    import hashlib
    assert meta["sshs_model_hash"] == hashlib.sha256(reduced[8 + n:]).hexdigest()
    assert meta["sshs_legacy_hash"] == hashlib.sha256(reduced[0x100000:0x110000]).hexdigest()[:8]
    assert result["tensors_out"] == len(b) and result["bytes_out"] == out.stat().st_size
    # a second chop never overwrites: a counter is added
    result2 = chop_file(src, preset="Garfield (Character+Style)")
    assert Path(result2["output"]).name == "in-chop-1.safetensors"
    with pytest.raises(ChopShopError, match="never overwritten"):
        chop_file(src, preset="Style", output=out)


def test_writer_matches_the_reference_serializer(tmp_path):
    """write_file's bytes equal safetensors' own save of the same tensors and metadata, odd names included
    (one metadata key: the reference orders several at random)."""
    from core.safetensors_file import entry_from_tensor, write_file
    g = torch.Generator().manual_seed(0)
    tensors = {"b.lora_up.weight": torch.randn(4, 3, generator=g).half(), 'q"uote\\back': torch.randn(2).bfloat16(),
               "\u00fcn\u00efc\u00f6de": torch.randn(3, 2), "ctrl\x01key": torch.arange(5, dtype=torch.int32),
               "a.alpha": torch.tensor(2.0), "empty": torch.zeros(0, 4)}
    meta = {"\u00fc\u65e5": '"quoted" \\ text'}
    out = tmp_path / "o.safetensors"
    write_file(out, {k: entry_from_tensor(v) for k, v in tensors.items()}, meta, hashes=False)
    assert out.read_bytes() == st_save(tensors, metadata=meta)


def test_writer_gathers_small_tensors_and_still_checks_and_hashes_each(tmp_path):
    """Small in-memory tensors share chunks with each other, between large ones: the bytes still equal the
    reference serializer's, the model hash is the SHA-256 of the data section, and a NaN in a gathered
    scalar is refused by that tensor's name with nothing left behind."""
    import hashlib
    import struct
    from core.safetensors_file import entry_from_tensor, write_file
    from core.safetensors_stream import SMALL
    g = torch.Generator().manual_seed(1)
    tensors = {f"m{i}.alpha": torch.tensor(float(i)) for i in range(300)}
    tensors.update({f"m{i}.lora_up.weight": torch.randn(SMALL // 2 + 64 * i, generator=g).half() for i in range(3)})
    tensors.update({f"m{i}.lora_down.weight": torch.randn(5, 7, generator=g).half() for i in range(300)})
    out = tmp_path / "o.safetensors"
    meta = write_file(out, {k: entry_from_tensor(v) for k, v in tensors.items()}, {"ss_x": "1"}, hashes=True,
                      nonfinite=lambda key: f"{key} is bad")
    raw = out.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert meta["sshs_model_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest()
    assert raw[8 + n:] == st_save(tensors)[8 + struct.unpack("<Q", st_save(tensors)[:8])[0]:]
    tensors["m123.alpha"] = torch.tensor(float("nan"))
    bad = tmp_path / "bad.safetensors"
    with pytest.raises(ChopShopError, match="m123.alpha is bad"):
        write_file(bad, {k: entry_from_tensor(v) for k, v in tensors.items()}, None, nonfinite=lambda k: f"{k} is bad")
    assert not bad.exists() and [p.name for p in tmp_path.iterdir()] == ["o.safetensors"]


def test_text_encoder_weight(seed_file):
    lora = read(seed_file)
    te_keys = {k for m in lora.modules if m.is_text_encoder for k in m.keys}
    out, _ = chop(lora, preset="All The Layers", te_weight=0)
    assert not te_keys & set(out.store.keys())
    out, _ = chop(lora, preset="All The Layers", te_weight=0.5)
    m = next(m for m in lora.modules if m.is_text_encoder)
    up = m.roles["up"]
    assert torch.allclose(out.store.tensor(up).float(), 0.5 * lora.store.tensor(up).float(), atol=1e-3)


BAD = [
    ("1,0,1", "expected 21 .*or 12|expected 21"),
    ("1,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,1,abc,0,0,0", "not a number"),
    ("1,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,1,-1,0,0,0", "negative"),
    ("1,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,1,nan,0,0,0", "finite"),
    ("", "empty"),
    ("1,,0", "empty"),
]


@pytest.mark.parametrize("vector,pattern", BAD)
def test_bad_vectors_write_nothing(seed_file, tmp_path, vector, pattern):
    src = tmp_path / "s.safetensors"
    src.write_bytes(seed_file.read_bytes())
    r = subprocess.run([sys.executable, "-m", "core", "chop", str(src), vector], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    import re
    assert re.search(pattern, r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]


def test_wrong_length_message_lists_lengths_and_labels(plain_file):
    with pytest.raises(ChopShopError) as e:
        chop(read(plain_file), vector="1,0,1")
    msg = str(e.value)
    assert "12 (" in msg and "21 (" in msg and "1," + ",".join(PLAIN_LABELS) in msg and "1," + ",".join(SDXL_LABELS) in msg


def test_vector_grammar_tolerance(plain_file):
    lora = read(plain_file)
    base = set(chop(lora, vector="1,0,0,1,1,0,1,1,1,1,1,1")[0].store.keys())
    for v in (" 1, 0,0,1,1,0,1,1,1,1,1,1 ", "1,0,0,1,1,0,1,1,1,1,1,1,", "MINE:1,0,0,1,1,0,1,1,1,1,1,1"):
        assert set(chop(lora, vector=v)[0].store.keys()) == base


def test_unknown_and_foreign_presets(plain_file):
    with pytest.raises(ChopShopError, match="did you mean 'Garfield"):
        find_preset("garfeild")
    with pytest.raises(ChopShopError, match="is for Flux"):
        chop(read(plain_file), preset="Flux Double only")


def test_user_presets_override_and_live_beside(tmp_path, monkeypatch, plain_file):
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"presets": [
        {"name": "Heavy Lifter", "layout": "sdxl", "description": "mine", "weights": {"global": 1, "OUT00": 1}},
        {"name": "Only OUT05", "layout": "sdxl", "vector": "1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0"},
    ]}))
    monkeypatch.setenv("CHOPSHOP_USER_PRESETS", str(user))
    presets = load_presets()
    assert presets["Heavy Lifter"].description == "mine"
    out, s = chop(read(plain_file), preset="Only OUT05")
    assert s["kept_blocks"] == ["OUT05"]
    # a preset naming only some labels keeps the others at the global weight, with a warning
    out, s = chop(read(plain_file), preset="Heavy Lifter")
    assert "OUT00" in s["kept_blocks"] and s["warnings"]


def test_presets_cli_json():
    r = subprocess.run([sys.executable, "-m", "core", "presets", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    names = {row["name"] for row in rows}
    assert set(SEED_VECTORS) <= names
    g = next(row for row in rows if row["name"] == "Garfield (Character+Style)")
    assert g["labels"] == SDXL_LABELS and g["layout"] == "sdxl"
    assert ",".join(str(int(v)) for v in g["vector"]) == SEED_VECTORS["Garfield (Character+Style)"]
    assert all({"name", "vector", "labels", "description", "layout"} <= set(row) for row in rows)
    assert any(row["layout"] == "flux" for row in rows)


def test_chop_cli_json_contract(seed_file, tmp_path):
    out = tmp_path / "o.safetensors"
    r = subprocess.run([sys.executable, "-m", "core", "chop", str(seed_file), "--preset", "Heavy Lifter", "-o", str(out),
                        "--json"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"output", "kept_blocks", "removed_blocks", "tensors_in", "tensors_out", "bytes_in", "bytes_out"} <= set(d)
    assert d["kept_blocks"] == ["OUT01"] and d["output"] == str(out)
    assert d["tensors_out"] == 318 + 264


def test_input_lora_is_not_mutated(mixed_file):
    lora = read(mixed_file)
    before = {k: lora.store.tensor(k).clone() for k in lora.store.keys()}
    chop(lora, vector="1," + ",".join("0.5" for _ in lora.blocks()))
    chop(lora, vector="1," + ",".join("0" for _ in lora.blocks()[:-1]) + ",1")
    assert all(torch.equal(lora.store.tensor(k), v) for k, v in before.items())
