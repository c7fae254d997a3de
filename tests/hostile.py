"""Hostile inputs, made by the tests themselves: malformed .safetensors containers, valid containers holding
broken modules, and malformed user preset files. No test functions here.

* ``CONTAINERS``: name -> bytes of a file every front end must refuse (header or container broken).
* ``MODULES``: name -> (state dict, broken module name): a readable file with one unusable module.
* ``PRESET_FILES``: name -> bytes of a user_presets.json that must be refused.
* ``good_sd()``: a small valid SDXL LoRA (three blocks and two text-encoder modules) to build on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import struct
from pathlib import Path

import torch
from safetensors.torch import save_file

Q = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"          # INP04, (640, 640)
MID = "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q"          # MID01, (1280, 1280)
OUT = "lora_unet_output_blocks_1_1_transformer_blocks_0_attn1_to_q"        # OUT01, (1280, 1280)
TE1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"              # clip_l (768, 768)
TE2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"              # clip_g (1280, 1280)
LAYERS = {Q: (640, 640), MID: (1280, 1280), OUT: (1280, 1280), TE1: (768, 768), TE2: (1280, 1280)}
META = {"ss_base_model_version": "sdxl_base_v1-0", "ss_network_dim": "4"}


def lora_module(name: str, shape, rank: int = 4, seed: int = 0, dtype=torch.float16) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {f"{name}.lora_down.weight": (torch.randn(rank, shape[1], generator=g) * 0.05).to(dtype),
            f"{name}.lora_up.weight": (torch.randn(shape[0], rank, generator=g) * 0.05).to(dtype),
            f"{name}.alpha": torch.tensor(2.0, dtype=dtype)}


def good_sd(dtype=torch.float16) -> dict[str, torch.Tensor]:
    sd = {}
    for i, (name, shape) in enumerate(LAYERS.items()):
        sd.update(lora_module(name, shape, seed=i, dtype=dtype))
    return sd


def write_sd(path: Path, sd: dict, metadata=None) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=META if metadata is None else metadata)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------ containers

DOWN, UP = f"{Q}.lora_down.weight", f"{Q}.lora_up.weight"
DATA = bytes(range(256)) * 40            # 10240 bytes: down F16 [4, 640] (5120) + up F16 [640, 4] (5120)


def entry(dtype="F16", shape=(4, 640), offsets=(0, 5120)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def header_file(header, data: bytes = DATA, length: int | None = None) -> bytes:
    """8-byte length + header (a dict is dumped; bytes/str are used as they are) + data."""
    if isinstance(header, dict):
        raw = json.dumps(header).encode()
    else:
        raw = header.encode() if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def pair(down=None, up=None, **extra) -> dict:
    h = {DOWN: down or entry(), UP: up or entry(shape=(640, 4), offsets=(5120, 10240))}
    h.update(extra)
    return h


def _pickle_bytes() -> bytes:
    return pickle.dumps({DOWN: [0.0] * 4})


def _good_bytes() -> bytes:
    return header_file(pair())


def _containers() -> dict[str, bytes]:
    good = _good_bytes()
    nested = b"{" + b'"a":' * 1 + b"[" * 200000 + b"]" * 200000 + b"}"
    return {
        "empty": b"",
        "four_bytes": b"\x10\x00\x00\x00",
        "length_past_end": struct.pack("<Q", 10 ** 6) + b"{}" + b" " * 6,
        "length_over_cap": struct.pack("<Q", 200 * 1024 * 1024) + b"{" + b" " * 4096,
        "length_zero": struct.pack("<Q", 0) + DATA,
        "random_bytes": bytes((i * 7919 + 13) % 256 for i in range(4096)),
        "not_json": header_file("{this is not json"),
        "bad_utf8": header_file(b'{"\xff\xfe": 1}'),
        "json_array": header_file("[1, 2, 3]"),
        "json_string": header_file('"a string"'),
        "deeply_nested": header_file(nested),
        "duplicate_key": header_file('{"%s": %s, "%s": %s, "%s": %s}' % (
            DOWN, json.dumps(entry()), DOWN, json.dumps(entry()), UP, json.dumps(entry(shape=(640, 4),
                                                                                        offsets=(5120, 10240))))),
        "shape_true": header_file(pair(down={"dtype": "F16", "shape": [True, 640], "data_offsets": [0, 5120]})),
        "shape_1e400": header_file(json.dumps(pair()).replace("[4, 640]", "[1e400, 640]")),
        "shape_negative": header_file(pair(down=entry(shape=(-4, 640)))),
        "shape_string": header_file(pair(down=entry(shape=("4", 640)))),
        "shape_not_list": header_file(pair(down={"dtype": "F16", "shape": 4, "data_offsets": [0, 5120]})),
        "shape_nan": header_file(json.dumps(pair()).replace("[4, 640]", "[NaN, 640]")),
        "shape_huge": header_file(pair(down=entry(shape=(2 ** 40, 2 ** 40)))),
        "offsets_float": header_file(json.dumps(pair()).replace("[0, 5120]", "[0.0, 5120.0]")),
        "offsets_negative": header_file(pair(down=entry(offsets=(-5120, 0)))),
        "offsets_string": header_file(pair(down=entry(offsets=("0", "5120")))),
        "offsets_reversed": header_file(pair(down=entry(offsets=(5120, 0)))),
        "offsets_three": header_file(pair(down=entry(offsets=(0, 5120, 10240)))),
        "offsets_overlap": header_file(pair(up=entry(shape=(640, 4), offsets=(0, 5120))), DATA[:5120]),
        "offsets_gap": header_file(pair(up=entry(shape=(640, 4), offsets=(5200, 10320))), DATA + b"\0" * 80),
        "trailing_bytes": header_file(pair(), DATA + b"\0" * 64),
        "size_mismatch": header_file(pair(down=entry(shape=(4, 641)))),
        "outside_file": header_file(pair(up=entry(shape=(640, 4), offsets=(5120, 10 ** 7)))),
        "unknown_dtype": header_file(pair(down=entry(dtype="F17"))),
        "dtype_not_string": header_file(pair(down=entry(dtype=16))),
        "entry_not_object": header_file(pair(down=[1, 2, 3])),
        "entry_missing_offsets": header_file(pair(down={"dtype": "F16", "shape": [4, 640]})),
        "metadata_not_strings": header_file(pair(__metadata__={"ss_network_dim": 4})),
        "metadata_not_object": header_file(pair(__metadata__=["a", "b"])),
        "bom_before_json": header_file(b"\xef\xbb\xbf" + json.dumps(pair()).encode()),
        "truncated_half": good[: len(good) // 2],
        "truncated_one_byte": good[:-1],
        "pickle_renamed": _pickle_bytes(),
        "no_tensors": header_file({"__metadata__": {"a": "b"}}, b""),
        "checkpoint_not_lora": header_file({"model.diffusion_model.out.2.weight": entry(shape=(4, 640))},
                                           DATA[:5120]),
        "infinity_in_header": header_file(json.dumps(pair()).replace("[0, 5120]", "[0, Infinity]")),
    }


CONTAINERS = _containers()


# ------------------------------------------------------------------------------------------------ modules

def _with(**changes) -> dict:
    sd = good_sd()
    for key, value in changes.items():
        if value is None:
            sd.pop(key.replace("__", "."), None)
        else:
            sd[key.replace("__", ".")] = value
    return sd


def _modules() -> dict[str, tuple[dict, str]]:
    f16 = torch.float16
    nan_up = good_sd()[f"{OUT}.lora_up.weight"].clone()
    nan_up[3, 1] = float("nan")
    inf_down = good_sd()[f"{MID}.lora_down.weight"].clone()
    inf_down[0, 0] = float("inf")
    ninf = good_sd()[f"{Q}.lora_down.weight"].clone()
    ninf[1, 5] = float("-inf")
    te_nan = good_sd()[f"{TE1}.lora_up.weight"].clone()
    te_nan[0, 0] = float("nan")
    bf = good_sd(torch.bfloat16)
    bf[f"{OUT}.lora_down.weight"][0, 0] = float("nan")
    g = torch.Generator().manual_seed(5)
    loha_bad = {f"{OUT}.hada_w1_a": torch.randn(1280, 4, generator=g).half(),
                f"{OUT}.hada_w1_b": torch.randn(3, 1280, generator=g).half(),
                f"{OUT}.hada_w2_a": torch.randn(1280, 4, generator=g).half(),
                f"{OUT}.hada_w2_b": torch.randn(4, 1280, generator=g).half(), f"{OUT}.alpha": torch.tensor(2.0)}
    loha_inf = {k: v.float() for k, v in loha_bad.items()}
    loha_inf[f"{OUT}.hada_w1_b"] = torch.randn(4, 1280, generator=g)
    loha_inf[f"{OUT}.hada_w2_a"][7, 1] = float("inf")
    lokr_bad = {f"{OUT}.lokr_w1": torch.randn(8, 8, generator=g).half(),
                f"{OUT}.lokr_w2_a": torch.randn(160, 4, generator=g).half(),
                f"{OUT}.lokr_w2_b": torch.randn(2, 160, generator=g).half(), f"{OUT}.alpha": torch.tensor(2.0)}
    base = {k: v for k, v in good_sd().items() if not k.startswith(OUT)}
    unknown_nan = _with()
    unknown_nan["bundle_emb.token.string_to_param.*"] = torch.tensor([1.0, float("nan")], dtype=f16)
    full_nan = torch.randn(1280, 1280, generator=g).half()
    full_nan[5, 5] = float("nan")
    return {
        "up_0dim": (_with(**{f"{OUT}__lora_up__weight": torch.tensor(1.0, dtype=f16)}), OUT),
        "down_1d": (_with(**{f"{OUT}__lora_down__weight": torch.zeros(1280, dtype=f16)}), OUT),
        "rank_zero": (_with(**{f"{OUT}__lora_down__weight": torch.zeros(0, 1280, dtype=f16),
                               f"{OUT}__lora_up__weight": torch.zeros(1280, 0, dtype=f16)}), OUT),
        "rank_mismatch": (_with(**{f"{OUT}__lora_down__weight": torch.zeros(8, 1280, dtype=f16)}), OUT),
        "nan_up": (_with(**{f"{OUT}__lora_up__weight": nan_up}), OUT),
        "inf_down": (_with(**{f"{MID}__lora_down__weight": inf_down}), MID),
        "neg_inf_down": (_with(**{f"{Q}__lora_down__weight": ninf}), Q),
        "alpha_nan": (_with(**{f"{OUT}__alpha": torch.tensor(float("nan"), dtype=f16)}), OUT),
        "alpha_inf": (_with(**{f"{OUT}__alpha": torch.tensor(float("inf"))}), OUT),
        "alpha_zero": (_with(**{f"{OUT}__alpha": torch.tensor(0.0, dtype=f16)}), OUT),
        "alpha_vector": (_with(**{f"{OUT}__alpha": torch.ones(2, dtype=f16)}), OUT),
        "te_nan": (_with(**{f"{TE1}__lora_up__weight": te_nan}), TE1),
        "bf16_nan": (bf, OUT),
        "loha_rank_mismatch": ({**base, **loha_bad}, OUT),
        "loha_fp32_inf": ({**base, **loha_inf}, OUT),
        "lokr_rank_mismatch": ({**base, **lokr_bad}, OUT),
        "full_diff_nan": ({**base, f"{OUT}.diff": full_nan}, OUT),
        "unknown_key_nan": (unknown_nan, "bundle_emb.token.string_to_param.*"),
    }


MODULES = _modules()


# ------------------------------------------------------------------------------------------------ presets

def _preset(**fields) -> dict:
    p = {"name": "Hostile", "layout": "sdxl", "weights": {"global": 1, "OUT01": 1}}
    p.update(fields)
    return p


def preset_doc(*presets) -> bytes:
    return json.dumps({"presets": list(presets)}).encode()


PRESET_FILES: dict[str, bytes] = {
    "negative_global": preset_doc(_preset(weights={"global": -1, "OUT01": 1})),
    "nan_global": preset_doc(_preset(weights={"global": math.nan, "OUT01": 1})),
    "infinity_weight": preset_doc(_preset(weights={"global": 1, "OUT01": math.inf})),
    "string_weight": preset_doc(_preset(weights={"global": 1, "OUT01": "0.5"})),
    "string_global": preset_doc(_preset(weights={"global": "abc"})),
    "bool_weight": preset_doc(_preset(weights={"global": 1, "OUT01": True})),
    "weights_list": preset_doc(_preset(weights=[1, 0, 1])),
    "string_entry": json.dumps({"presets": ["not a preset"]}).encode(),
    "bad_utf8": b'{"presets": [{"name": "\xff\xfe", "layout": "sdxl", "weights": {}}]}',
    "presets_not_list": json.dumps({"presets": {"a": 1}}).encode(),
    "unknown_layout": preset_doc(_preset(layout="nonsense")),
    "unknown_label": preset_doc(_preset(weights={"global": 1, "BLOCK99": 1})),
    "vector_nan": preset_doc({"name": "V", "layout": "sdxl", "vector": "1," + ",".join(["nan"] * 20)}),
    "vector_not_string": preset_doc({"name": "V", "layout": "sdxl", "vector": [1] * 21}),
    "deeply_nested": b'{"presets": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "not_json": b"{presets: nope",
    "description_not_string": preset_doc(_preset(description=["x"])),
}


def make_special(path: Path, kind: str) -> Path:
    """A path that is no regular file: a directory, a FIFO, or (symlinked) a character device."""
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/null")
    return path
