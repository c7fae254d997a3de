"""Tensor key names: split a key into (module base, role), group keys into modules, and spell new keys.

A module is one base name plus all tensors ``base<suffix>`` that belong to it. Suffixes are tried longest
first (docs/formats.md §3); ``alpha`` and ``dora_scale`` belong to the base as ComfyUI sees it (``x.alpha`` for
``x.lora.down.weight``). A key that fits no suffix is "unknown": it is carried through and reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Up/down spellings ("families"): name -> (up suffix, down suffix). Resized modules are written in the
# family the module already used; converted LoHa/LoKr/Tucker/diff modules get "kohya".
FAMILIES: dict[str, tuple[str, str]] = {
    "kohya": (".lora_up.weight", ".lora_down.weight"),
    "peft_default": (".lora_B.default.weight", ".lora_A.default.weight"),
    "peft": (".lora_B.weight", ".lora_A.weight"),
    "diffusers_linear_layer": (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
    "diffusers_processor": ("_lora.up.weight", "_lora.down.weight"),
    "diffusers_lora": (".lora.up.weight", ".lora.down.weight"),
    "peft_bare": (".lora_B", ".lora_A"),
    "xlabs": (".up.weight", ".down.weight"),
    "control": (".up", ".down"),
}

# Every other suffix with its role (the role is the suffix without its leading dot and ".weight").
_OTHER_SUFFIXES = [
    ".lora_mid.weight", ".lora_B.bias",
    ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
    ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
    ".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight", ".bm.weight",
    ".oft_blocks", ".rescale", ".on_input",
    ".alpha", ".dora_scale", ".lora_magnitude_vector", ".lora_magnitude_vector.weight",
    ".lora_magnitude_vector.default.weight",
    ".diff", ".diff_b", ".w_norm", ".b_norm", ".set_weight", ".reshape_weight",
]


def _role_of(suffix: str) -> str:
    role = suffix.lstrip("._")
    role = {"lora_mid.weight": "mid", "lora_B.bias": "up_bias"}.get(role, role)
    if role.startswith("lora_magnitude_vector"):
        return "magnitude"
    return role[: -len(".weight")] if role.endswith(".weight") else role


SUFFIXES: list[tuple[str, str, str | None]] = []  # (suffix, role, family)
for _fam, (_up, _down) in FAMILIES.items():
    SUFFIXES += [(_up, "up", _fam), (_down, "down", _fam)]
SUFFIXES += [(s, _role_of(s), None) for s in _OTHER_SUFFIXES]
SUFFIXES.sort(key=lambda t: -len(t[0]))


# Suffixes bucketed by their last dotted component, so a key is only tested against its few candidates.
_BY_LAST: dict[str, list[tuple[str, str, str | None]]] = {}
for _entry in SUFFIXES:
    _BY_LAST.setdefault(_entry[0].rsplit(".", 1)[-1], []).append(_entry)


def split_key(key: str) -> tuple[str, str | None, str | None]:
    """``key -> (base, role, family)``; role None means an unknown key (base is then the key itself)."""
    for suffix, role, fam in _BY_LAST.get(key.rsplit(".", 1)[-1], ()):
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], role, fam
    return key, None, None


@dataclass
class KeyGroup:
    """The keys of one module: ``roles`` maps role -> original key; ``family`` is the up/down spelling."""
    base: str
    roles: dict[str, str] = field(default_factory=dict)
    family: str | None = None


def group_keys(keys: list[str]) -> tuple[dict[str, KeyGroup], list[str]]:
    """Group tensor keys into modules. Returns ``({base: KeyGroup}, unknown keys)``.

    (IA)^3 uses a bare ``.weight`` next to ``.on_input``; a ``.weight`` key is only taken as (IA)^3 when
    its base has ``.on_input``. A base with nothing but ``alpha``/``dora_scale`` is not a module: its keys
    are returned as unknown.
    """
    groups: dict[str, KeyGroup] = {}
    unknown: list[str] = []
    leftovers: list[str] = []
    for key in keys:
        base, role, fam = split_key(key)
        if role is None:
            leftovers.append(key)
            continue
        g = groups.setdefault(base, KeyGroup(base))
        if role in g.roles:  # the same role spelled twice: keep the first, carry the other through
            unknown.append(key)
            continue
        g.roles[role] = key
        if fam is not None:
            if g.family not in (None, fam):
                unknown.append(key)
                del g.roles[role]
                continue
            g.family = fam
    for key in leftovers:
        if key.endswith(".weight") and key[: -len(".weight")] in groups and \
                "on_input" in groups[key[: -len(".weight")]].roles:
            groups[key[: -len(".weight")]].roles["ia3_weight"] = key
        else:
            unknown.append(key)
    for base in list(groups):
        if set(groups[base].roles) <= {"alpha", "dora_scale", "magnitude", "rescale", "on_input", "reshape_weight"}:
            unknown += groups.pop(base).roles.values()
    return groups, unknown


def spell(base: str, role: str, family: str | None) -> str:
    """The key for ``role`` of module ``base`` in its family's spelling (kohya's when it has none)."""
    fam = FAMILIES[family or "kohya"]
    if role == "up":
        return base + fam[0]
    if role == "down":
        return base + fam[1]
    if role == "alpha":
        return base + ".alpha"
    raise ValueError(f"no spelling rule for role {role!r}")
