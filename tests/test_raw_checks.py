"""The raw-byte value checks (core/module_checks.py) against torch on the same values: NaN/Inf found from the
exponent bits with and without numpy, one-element values decoded without numpy."""
import math

import pytest
import torch

from core.module_checks import bytes_nonfinite, raw_nonfinite, raw_scalar
from core.safetensors_file import DTYPE_NAMES, tensor_bytes

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e5m2, torch.float8_e4m3fn]
SPECIAL = [float("nan"), float("inf"), -float("inf"), -float("nan")]


def _values(dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Finite values over the whole range of ``dtype``: tiny, huge (up to its largest), signed, subnormal."""
    g = torch.Generator().manual_seed(seed)
    big = torch.finfo(dtype).max
    t = torch.randn(4096, generator=g, dtype=torch.float64) * torch.logspace(-8, 8, 4096, dtype=torch.float64)
    extremes = torch.tensor([0.0, -0.0, big, -big, torch.finfo(dtype).tiny, torch.finfo(dtype).tiny / 4],
                            dtype=torch.float64)
    return torch.cat([t.clamp(-big, big), extremes]).to(dtype)


def _bytes(t: torch.Tensor) -> bytes:
    return bytes(tensor_bytes(t))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_finite_values_pass_both_checks(dtype):
    t = _values(dtype, 0)
    assert bool(t.double().isfinite().all())
    raw = _bytes(t)
    assert not bytes_nonfinite(DTYPE_NAMES[dtype], raw)
    assert not bytes_nonfinite(DTYPE_NAMES[dtype], bytearray(raw))
    assert not raw_nonfinite(DTYPE_NAMES[dtype], raw)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("special", SPECIAL, ids=str)
@pytest.mark.parametrize("where", [0, 1, 2047, 4101])
def test_one_nan_or_inf_anywhere_is_found(dtype, special, where):
    t = _values(dtype, where)
    t[where] = special
    expected = not bool(t.double().isfinite().all())     # float8_e4m3fn has no Inf: torch saturates it to 448
    assert expected or (dtype == torch.float8_e4m3fn and math.isinf(special))
    raw = _bytes(t)
    assert bytes_nonfinite(DTYPE_NAMES[dtype], raw) is expected
    assert raw_nonfinite(DTYPE_NAMES[dtype], raw) is expected


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_a_range_is_checked_alone(dtype):
    t = _values(dtype, 3)
    t[100] = float("nan")
    raw, size = _bytes(t), t.element_size()
    name = DTYPE_NAMES[dtype]
    assert not bytes_nonfinite(name, raw, 0, 100 * size)
    assert not bytes_nonfinite(name, raw, 101 * size, len(raw))
    assert bytes_nonfinite(name, raw, 100 * size, 101 * size)
    assert bytes_nonfinite(name, raw, 7 * size, 200 * size)
    assert not bytes_nonfinite(name, raw, 5 * size, 5 * size)


def test_integer_dtypes_are_never_nonfinite():
    raw = bytes(range(256)) * 8
    for name in ("U8", "I8", "I16", "U16", "I32", "I64", "BOOL"):
        assert not bytes_nonfinite(name, raw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, -3.5, 8.0, 1e-3, 65504.0, 1e30, float("inf"), float("nan")])
def test_raw_scalar_matches_torch(dtype, value):
    t = torch.tensor([value], dtype=dtype)
    got = raw_scalar(DTYPE_NAMES[dtype], _bytes(t))
    want = float(t[0])
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_raw_scalar_refuses_what_is_no_single_float():
    assert raw_scalar("F16", b"\x00\x3c\x00\x3c") is None
    assert raw_scalar("I32", b"\x01\x00\x00\x00") is None
