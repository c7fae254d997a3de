"""Checks that find broken modules: shapes from the header alone, values (NaN/Inf, alpha) from the tensors.

A broken module is one no loader could use as it is: a factor that is a scalar or a vector where a matrix is
needed, a rank of 0, factors whose inner sizes disagree (``up`` (out, r) with ``down`` (r', in), r != r'),
an alpha that is not one number, or (from the data) NaN/Inf values and an alpha of 0 or not finite.
Each check returns the user-facing reason, or None. The reader marks such modules ``Problem.BROKEN``;
inspect reports them by name, chop and resize refuse to write them.
"""
from __future__ import annotations

import math
import struct
from typing import Mapping

# Roles that are matrices (or conv kernels): at least 2-D, no zero dimension.
MATRIX_ROLES = ("up", "down", "mid", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
                "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
                "a1", "a2", "b1", "b2", "diff")
# (kind, left role, right role): left.shape[1] must equal right.shape[0] (the inner rank).
INNER_PAIRS = (
    (("lora", "locon", "tucker"), "up", "down"),
    (("loha",), "hada_w1_a", "hada_w1_b"),
    (("loha",), "hada_w2_a", "hada_w2_b"),
    (("lokr",), "lokr_w1_a", "lokr_w1_b"),
    (("lokr",), "lokr_w2_a", "lokr_w2_b"),
)
# Kinds whose effective scale is alpha / rank: there an alpha of 0 silences the module.
ALPHA_KINDS = ("lora", "locon", "tucker", "loha", "loha_tucker", "lokr", "glora")


def shape_problem(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why the module's shapes (header only) make it unusable, or None."""
    for role in MATRIX_ROLES:
        s = shapes.get(role)
        if s is None:
            continue
        if len(s) < 2:
            return f"{role} is {len(s)}-D {list(s)}; a factor must be a matrix (2-D) or a conv kernel (4-D)"
        if 0 in s:
            return f"{role} has shape {list(s)}: rank 0 or an empty dimension"
    for kinds, left, right in INNER_PAIRS:
        if left == "lokr_w2_a" and "lokr_t2" in shapes:
            continue  # Tucker LoKr: w2_a is (rank, out), w2_b (rank, in)
        if kind in kinds and left in shapes and right in shapes and shapes[left][1] != shapes[right][0]:
            return (f"rank mismatch: {left} {list(shapes[left])} has rank {shapes[left][1]} but {right} "
                    f"{list(shapes[right])} has rank {shapes[right][0]}")
    if kind == "tucker" and "mid" in shapes and shapes["mid"][0] != shapes["down"][0]:
        return f"rank mismatch: mid {list(shapes['mid'])} does not match down {list(shapes['down'])}"
    if "alpha" in shapes and math.prod(shapes["alpha"]) != 1:
        return f"alpha has shape {list(shapes['alpha'])} ({math.prod(shapes['alpha'])} values); expected one number"
    return None


def nonfinite_problem(tensors: Mapping[str, "torch.Tensor"]) -> str | None:
    """Which role holds NaN/Inf values, or None. ``tensors``: role -> tensor as read from the file."""
    for role, t in tensors.items():
        if t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
            return f"{role} holds {'NaN' if bool(t.isnan().any()) else 'Inf'} values"
    return None


def alpha_problem(kind: str, alpha: "torch.Tensor | float | None", scales: bool = True) -> str | None:
    """Why an alpha makes the module unusable (NaN/Inf; 0, so the module does nothing), or None. ``alpha``: the
    alpha tensor, or its one value (``raw_scalar``). ``scales``: whether this module's scale is alpha / rank
    (False e.g. for a LoKr without a decomposed factor)."""
    if alpha is None or hasattr(alpha, "numel") and alpha.numel() != 1:
        return None
    a = float(alpha.reshape(-1)[0]) if hasattr(alpha, "numel") else float(alpha)
    if not math.isfinite(a):
        return f"alpha is {a}"
    if kind in ALPHA_KINDS and scales and a == 0:
        return "alpha is 0, so the module has no effect (scale alpha/rank = 0)"
    return None


def value_problem(kind: str, tensors: Mapping[str, "torch.Tensor"]) -> str | None:
    """Why the module's values make it unusable (a bad alpha, NaN/Inf anywhere), or None."""
    return alpha_problem(kind, tensors.get("alpha")) or nonfinite_problem(tensors)


# Raw-byte checks: the exponent bits of each float format, so NaN/Inf and the largest |value| are found
# straight from the file's bytes (numpy integer ops), without decoding half floats (slow on CPU).
_EXPONENT = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
             "F64": ("<u8", 0x7FF0000000000000), "F8_E5M2": ("u1", 0x7C)}


def raw_nonfinite(dtype: str, raw) -> bool:
    """True when the raw little-endian bytes of a tensor of ``dtype`` hold a NaN or an Inf."""
    import numpy as np
    if dtype == "F8_E4M3":          # no Inf; NaN is S.1111.111
        return bool(((np.frombuffer(raw, "u1") & 0x7F) == 0x7F).any())
    if dtype not in _EXPONENT or not len(raw):
        return False
    kind, mask = _EXPONENT[dtype]      # the masked exponent is at most all ones: a max finds any such value
    return int((np.frombuffer(raw, kind) & np.array(mask, kind)).max()) == mask


# Without numpy (its import costs more than a 0/1 chop's whole check): the byte holding the exponent's top
# bits is taken from every element by one strided slice, and a translate table marks (0xFF) every value
# whose masked bits are all ones; a mark is NaN/Inf (F16, F8: that byte holds the whole exponent) or, for
# the wider formats, a value of at least 2^127 (BF16, F32) or 2^1009 (F64), then checked exactly together
# with the next byte. ``dtype: (element size, top byte, its mask, next byte or None, its mask)``.
_PLANES = {"F16": (2, 1, 0x7C, None, 0), "BF16": (2, 1, 0x7F, 0, 0x80), "F32": (4, 3, 0x7F, 2, 0x80),
           "F64": (8, 7, 0x7F, 6, 0xF0), "F8_E5M2": (1, 0, 0x7C, None, 0), "F8_E4M3": (1, 0, 0x7F, None, 0)}
_FLAG = {m: bytes(0xFF if b & m == m else 0 for b in range(256)) for m in (0x7C, 0x7F, 0x80, 0xF0)}


def bytes_nonfinite(dtype: str, buf: bytes | bytearray, start: int = 0, end: int | None = None) -> bool:
    """``raw_nonfinite`` of ``buf[start:end]`` without numpy (``buf``: bytes or bytearray)."""
    plane = _PLANES.get(dtype)
    end = len(buf) if end is None else end
    if plane is None or end <= start:
        return False
    size, top, top_mask, nxt, nxt_mask = plane
    marks = buf[start + top:end:size].translate(_FLAG[top_mask])
    if b"\xff" not in marks:
        return False
    if nxt is None:
        return True
    nxt_marks = buf[start + nxt:end:size].translate(_FLAG[nxt_mask])
    return int.from_bytes(marks, "little") & int.from_bytes(nxt_marks, "little") != 0


def raw_scalar(dtype: str, raw) -> float | None:
    """The value of a one-element float tensor from its raw little-endian bytes (no torch), else None."""
    if dtype == "BF16" and len(raw) == 2:
        return struct.unpack("<f", b"\x00\x00" + bytes(raw))[0]
    fmt = {"F16": "<e", "F32": "<f", "F64": "<d"}.get(dtype)
    if fmt is None or len(raw) != struct.calcsize(fmt):
        return None
    return struct.unpack(fmt, raw)[0]


_MAGNITUDE = {"F16": ("<u2", 0x7FFF, "<f2"), "BF16": ("<u2", 0x7FFF, None), "F32": ("<u4", 0x7FFFFFFF, "<f4"),
              "F64": ("<u8", 0x7FFFFFFFFFFFFFFF, "<f8")}
# The largest finite value a dtype stores (chop scales in float32, so float64 is held to float32's range).
LARGEST = {"F16": 65504.0, "BF16": 3.3895313892515355e38, "F32": 3.4028234663852886e38,
           "F64": 3.4028234663852886e38}


def raw_max_abs(dtype: str, raw) -> float | None:
    """The largest |value| of a finite float tensor from its raw bytes (magnitudes order like their bit
    patterns once the sign bit is cleared); None for other dtypes or no values."""
    import numpy as np
    if dtype not in _MAGNITUDE or not len(raw):
        return None
    kind, mask, as_float = _MAGNITUDE[dtype]
    bits = (np.frombuffer(raw, kind) & np.array(mask, kind)).max()
    if dtype == "BF16":
        return float(np.array([int(bits) << 16], "<u4").view("<f4")[0])
    return float(np.array([bits], kind).view(as_float)[0])


def refuse_broken(lora) -> None:
    """Raise ``ChopShopError`` naming the first broken module, or the first tensor holding NaN/Inf, of a
    LoraFile about to be written (reads every tensor: meant for in-memory LoRAs)."""
    from .errors import ChopShopError
    from .lora_file import Problem
    for m in lora.modules:
        if m.has_problem(Problem.BROKEN):
            why = next(str(p) for p in m.problems if p.kind == Problem.BROKEN)
            raise ChopShopError(f"{m.base}: {why}; nothing was written")
    for key in lora.store.keys():
        if raw_nonfinite(*lora.store.raw(key)):
            raise ChopShopError(f"{key}: holds NaN or Inf values; a LoRA with them is never written")

