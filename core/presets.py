"""Named block presets, stored by block label (docs/blocks.md decision (d)).

Shipped presets live in ``presets.json`` at the pack root; the user's own in ``user_presets.json`` beside
it (or the file named by ``CHOPSHOP_USER_PRESETS``), which updates never touch. A user preset with the
name of a shipped one wins. Files are read on every call (never at import), so edits show without restart.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .architectures import ARCHITECTURES, full_layout
from . import strict_json
from .errors import ChopShopError

PACK_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = PACK_ROOT / "presets.json"
USER = PACK_ROOT / "user_presets.json"


@dataclass(frozen=True)
class Preset:
    name: str
    layout: str                       # architecture id whose block labels the weights use
    weights: dict[str, float]         # label -> weight (without "global")
    global_weight: float
    description: str
    source: str                       # "shipped" or the user file's path


def user_file() -> Path:
    env = os.environ.get("CHOPSHOP_USER_PRESETS")
    return Path(env) if env else USER


def _weight(where: str, label: str, v) -> float:
    """One weight, by the rules of a typed vector: a finite number >= 0 (not a string, list or bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ChopShopError(f"{where}: weight of {label} must be a number >= 0, got {v!r}")
    if not math.isfinite(v) or v < 0:
        raise ChopShopError(f"{where}: weight of {label} must be a finite number >= 0, got {v!r}")
    return float(v)


def _label_weights(entry: dict, where: str, layout: str) -> dict:
    """label -> raw weight (with "global" when given) from an entry's 'weights' map or 'vector' string."""
    labels = full_layout(layout)
    if "weights" in entry:
        if not isinstance(entry["weights"], dict):
            raise ChopShopError(f"{where}: 'weights' must be a map of block label -> number, "
                                f"got {type(entry['weights']).__name__}")
        return dict(entry["weights"])
    if "vector" in entry:  # convenience for user files: a full-layout vector string
        if not isinstance(entry["vector"], str):
            raise ChopShopError(f"{where}: 'vector' must be a string such as \"1,0,1,...\"")
        from .vector import split_numbers
        try:
            values, _ = split_numbers(entry["vector"])
        except ChopShopError as e:
            raise ChopShopError(f"{where}: {e}") from None
        if len(values) != 1 + len(labels):
            raise ChopShopError(f"{where}: vector has {len(values)} numbers; a {layout} preset needs "
                                f"{1 + len(labels)} (1,{','.join(labels)})")
        return {"global": values[0], **dict(zip(labels, values[1:]))}
    raise ChopShopError(f"{where}: needs 'weights' (by block label) or 'vector'")


def _parse(entry, origin: str) -> Preset:
    if not isinstance(entry, dict):
        raise ChopShopError(f"{origin}: each preset must be a JSON object, got {type(entry).__name__}")
    name, layout = entry.get("name"), entry.get("layout")
    if not isinstance(name, str) or not name.strip():
        raise ChopShopError(f"{origin}: a preset has no name")
    where = f"{origin}: preset {name!r}"
    if not isinstance(layout, str) or layout not in ARCHITECTURES:
        raise ChopShopError(f"{where}: unknown layout {layout!r}; valid: {', '.join(ARCHITECTURES)}")
    labels = full_layout(layout)
    w = _label_weights(entry, where, layout)
    g = _weight(where, "global", w.pop("global", 1.0))
    unknown = [k for k in w if k not in labels]
    if unknown:
        raise ChopShopError(f"{where}: labels {', '.join(unknown)} are not {layout} blocks ({','.join(labels)})")
    weights = {k: _weight(where, k, v) for k, v in w.items()}
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ChopShopError(f"{where}: 'description' must be a string")
    return Preset(name.strip(), layout, weights, g, description, origin)


def _read(path: Path, origin: str) -> list[Preset]:
    try:
        doc = strict_json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise ChopShopError(f"{path}: cannot read presets ({e})") from None
    entries = doc.get("presets", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ChopShopError(f"{path}: expected a list of presets under 'presets'")
    return [_parse(e, origin) for e in entries]


def load_presets(shipped: Path | None = None, user: Path | None = None) -> dict[str, Preset]:
    """All presets by name, shipped first, user presets overriding shipped ones of the same name."""
    out: dict[str, Preset] = {}
    shipped = shipped or SHIPPED
    if not shipped.is_file():   # e.g. a non-editable pip install, which copies core/ alone
        raise ChopShopError(f"{shipped}: the shipped presets are missing; run from the pack folder (python -m core) "
                            "or install the chopshop command with `pip install -e <pack folder>`")
    for p in _read(shipped, "shipped"):
        out[p.name] = p
    upath = user or user_file()
    for p in _read(upath, str(upath)):
        out[p.name] = p
    return out


def find_preset(name: str, presets: dict[str, Preset] | None = None) -> Preset:
    """The preset called ``name`` (exact, then case-insensitive); else an error naming close names."""
    presets = load_presets() if presets is None else presets
    key = (name or "").strip()
    if key in presets:
        return presets[key]
    folded = {n.casefold(): n for n in presets}
    if key.casefold() in folded:
        return presets[folded[key.casefold()]]
    short = {n.split("(")[0].strip().casefold(): n for n in presets}
    close = [short[c] for c in difflib.get_close_matches(key.casefold(), list(short), n=5, cutoff=0.6)]
    close += [n for n in difflib.get_close_matches(key, list(presets), n=5, cutoff=0.5) if n not in close]
    close += [n for n in presets if key.casefold() and key.casefold() in n.casefold() and n not in close]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:5])}?" if close else \
        f"; known presets: {', '.join(sorted(presets))}"
    raise ChopShopError(f"unknown preset {name!r}{hint}")


def check_architecture(preset: Preset, architecture: str) -> None:
    if preset.layout != architecture:
        a = ARCHITECTURES.get(architecture)
        raise ChopShopError(
            f"preset {preset.name!r} is for {ARCHITECTURES[preset.layout].title} ({preset.layout}) blocks, but this "
            f"LoRA is {a.title if a else 'of an unknown architecture'} ({architecture}); "
            f"pick a {architecture} preset or give a vector")


def preset_vector(preset: Preset) -> tuple[list[float], list[str]]:
    """(numbers in layout order, global first; the labels they apply to)."""
    labels = list(full_layout(preset.layout))
    return [preset.global_weight, *(preset.weights.get(lab, 1.0) for lab in labels)], labels


def preset_rows(presets: dict[str, Preset], architecture: str | None = None) -> list[dict]:
    if architecture and architecture not in ARCHITECTURES:
        raise ChopShopError(f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    rows = []
    for p in presets.values():
        if architecture and p.layout != architecture:
            continue
        vector, labels = preset_vector(p)
        rows.append({"name": p.name, "vector": vector, "labels": labels, "description": p.description,
                     "layout": p.layout, "source": p.source})
    return rows
