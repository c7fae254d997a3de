"""Strict JSON: what safetensors' own loader and a careful reader refuse, refused here too.

``loads(raw)`` parses UTF-8 bytes and raises ``StrictJSONError`` (a ValueError) with a short reason for bad
UTF-8, bad syntax, a key that appears twice in one object, ``NaN``/``Infinity`` (not JSON numbers) and
nesting too deep to parse. Callers add the file name and what the file is. ``dumps(obj)`` writes strict
JSON: a non-finite float becomes null.
"""
from __future__ import annotations

import json
import math


class StrictJSONError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                raise StrictJSONError(f"key {k!r} appears twice")
            seen.add(k)
    return out


def _refuse_constant(word: str):
    raise StrictJSONError(f"{word} is not a number JSON allows")


def loads(raw: bytes):
    """The JSON value of ``raw``; StrictJSONError says why it is refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StrictJSONError(f"not UTF-8 text: byte {e.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except StrictJSONError:
        raise
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply") from None
    except ValueError as e:
        raise StrictJSONError(f"{e.__class__.__name__}: {e}") from None


def finite(obj):
    """``obj`` with every non-finite float replaced by None, so it serializes as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj) -> str:
    """Strict JSON of ``obj`` (indent 1), never NaN or Infinity: non-finite numbers become null."""
    return json.dumps(finite(obj), indent=1, allow_nan=False)
