"""Block Chop: keep, drop or scale blocks of a LoRA (docs/blocks.md decisions (a)-(d)).

A block weight w = global x w_i. w == 0 removes every tensor of the block's modules; w == 1 leaves them
byte-identical; any other w scales each module's delta-W by exactly w by multiplying ONE factor per additive
term (LoRA ``up``, LoHa ``hada_w1_a``, LoKr ``lokr_w1``, full ``diff`` ...), never alpha and never every
tensor. Text-encoder and other non-block keys pass through byte-for-byte unless the text-encoder weight says
otherwise. The input is never modified: the result is a new LoraFile over a derived store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import adapters
from .architectures import full_layout
from .errors import ChopShopError
from .lora_file import LoraFile, Module, Problem, read
from .module_checks import LARGEST, alpha_problem, raw_max_abs, raw_nonfinite, raw_scalar
from .save import default_output, save, with_provenance
from .vector import BlockWeights, parse_vector, weights_from_labels

EPS = 1e-6


@dataclass
class ChopPlan:
    """What chop will do, block by block."""
    weights: BlockWeights
    te_weight: float
    preset: str | None = None
    warnings: list[str] = field(default_factory=list)

    def kept(self) -> list[str]:
        return [lab for lab, w in self.weights.weights.items() if abs(w) >= EPS]

    def removed(self) -> list[str]:
        return [lab for lab, w in self.weights.weights.items() if abs(w) < EPS]

    def scaled(self) -> dict[str, float]:
        return {lab: w for lab, w in self.weights.weights.items() if abs(w) >= EPS and abs(w - 1) > EPS}


def plan(lora: LoraFile, vector: str | None = None, preset: str | None = None, te_weight: float = 1.0) -> ChopPlan:
    """Resolve a vector string or a preset name against the LoRA's blocks; raises on bad input."""
    if te_weight is None or te_weight != te_weight or te_weight < 0 or te_weight == float("inf"):
        raise ChopShopError(f"text-encoder weight must be a finite number >= 0, got {te_weight}")
    present = lora.blocks()
    if not present:
        raise ChopShopError(
            f"no blocks found in this LoRA (architecture: {lora.architecture}); nothing to chop. "
            "Its modules are all text-encoder or non-block layers.")
    layout = list(full_layout(lora.architecture)) if lora.arch else None
    if preset is not None:
        from .presets import check_architecture, find_preset
        p = find_preset(preset)
        check_architecture(p, lora.architecture)
        weights = weights_from_labels(p.weights, p.global_weight, present, p.name)
        return ChopPlan(weights, te_weight, p.name, list(weights.warnings))
    weights = parse_vector(vector, present, layout)
    return ChopPlan(weights, te_weight, None, list(weights.warnings))


def _scaled_tensors(lora: LoraFile, m: Module, w: float, warnings: list[str]) -> dict:
    import torch
    roles = adapters.roles_to_scale(m.kind, m.roles)
    if not roles:
        warnings.append(f"{m.base}: a {adapters.KIND_NAMES[m.kind]} module cannot be scaled by {w:g} (only kept "
                        "or removed); kept at full strength")
        return {}
    if m.dora:
        warnings.append(f"{m.base}: DoRA module scaled by {w:g}: approximate (the magnitude renormalises W0+dW)")
    out = {}
    for role in roles:
        key = m.roles[role]
        t = lora.store.tensor(key)
        out[key] = (t.to(torch.float32) * w).to(t.dtype)
    return out


def module_weight(p: ChopPlan, m: Module) -> float:
    """The weight the plan gives a module: its block's, the text-encoder weight, else 1 (passed through)."""
    if m.block is not None:
        return p.weights.weights[m.block]
    return p.te_weight if m.is_text_encoder else 1.0


def check_output(lora: LoraFile, p: ChopPlan, values: bool = True) -> None:
    """Refuse, before anything is written, a plan whose output would hold a broken module, NaN/Inf, or a
    value the tensor's dtype cannot hold once scaled (naming the module and its largest safe weight).
    Reads the surviving tensors' raw bytes once (integer checks of the exponent bits: fast). With ``values``
    False only the alphas and the factors to scale up are read: NaN/Inf elsewhere is then left to the writer
    (``save(..., nonfinite=nonfinite_message(lora))``), which checks each chunk as it copies it."""
    for m in lora.modules:
        w = module_weight(p, m)
        if abs(w) < EPS:
            continue
        if m.has_problem(Problem.BROKEN):
            raise ChopShopError(f"{m.base}: {next(str(q) for q in m.problems if q.kind == Problem.BROKEN)}; "
                                "drop its block (weight 0) or repair the file; nothing was written")
        bad = alpha_problem(m.kind, raw_scalar(*lora.store.raw(m.roles["alpha"])) if "alpha" in m.roles else None,
                            m.nominal_rank is not None)
        if bad:
            raise ChopShopError(_broken_message(m.base, bad))
        scaled = adapters.roles_to_scale(m.kind, m.roles) if w > 1 + EPS else []
        for role, key in m.roles.items():
            if not values and role not in scaled:
                continue
            dtype, raw = lora.store.raw(key)
            if raw_nonfinite(dtype, raw):
                raise ChopShopError(_broken_message(m.base, f"{role} holds NaN or Inf values"))
            peak = raw_max_abs(dtype, raw) if role in scaled else None
            if peak and peak * w > LARGEST[dtype]:
                raise ChopShopError(
                    f"{m.base}: weight {w:g} would overflow {dtype} ({role} holds {peak:g}; the largest storable "
                    f"value is {LARGEST[dtype]:g}); the largest safe weight for this module is "
                    f"{LARGEST[dtype] / peak:.6g}; nothing was written")
    for key in lora.unknown_keys if values else ():
        if raw_nonfinite(*lora.store.raw(key)):
            raise ChopShopError(nonfinite_message(lora)(key))


def _broken_message(base: str, why: str) -> str:
    return f"{base}: broken module: {why}; drop its block (weight 0) or repair the file; nothing was written"


def nonfinite_message(lora: LoraFile) -> Callable[[str], str]:
    """The message chop gives for a tensor key holding NaN/Inf: its module's, or the pass-through key's."""
    def message(key: str) -> str:
        for m in lora.modules:
            role = next((r for r, k in m.roles.items() if k == key), None)
            if role is not None:
                return _broken_message(m.base, f"{role} holds NaN or Inf values")
        return f"{key}: holds NaN or Inf values; it would be passed through into the output; nothing was written"
    return message


def apply(lora: LoraFile, p: ChopPlan, check_values: bool = True) -> tuple[LoraFile, dict]:
    """Apply a plan; returns the new LoraFile and a summary. ``check_values``: see ``check_output``."""
    check_output(lora, p, check_values)
    removed, added = [], {}
    warnings = list(p.warnings)
    for m in lora.modules:
        if m.block is not None:
            w = p.weights.weights[m.block]
        elif m.is_text_encoder:
            w = p.te_weight
        else:
            continue  # non-block diffusion-model layers and unresolved modules pass through untouched
        if abs(w) < EPS:
            removed += m.keys
        elif abs(w - 1) > EPS:
            added.update(_scaled_tensors(lora, m, w, warnings))
    unresolved = [m.base for m in lora.modules if m.block is None and m.component is None]
    if unresolved:
        warnings.append(f"{len(unresolved)} modules outside any known layer passed through unchanged "
                        f"(e.g. {unresolved[0]})")
    if lora.unknown_keys:
        warnings.append(f"{len(lora.unknown_keys)} keys that are no adapter passed through unchanged "
                        f"(e.g. {lora.unknown_keys[0]})")
    store = lora.store.derive(added, removed)
    if not store.keys():
        raise ChopShopError("this vector removes every tensor of the LoRA; nothing would be left to save")
    step = {"operation": "chop", "vector": p.weights.text, "mode": p.weights.mode, "te_weight": p.te_weight}
    if p.preset:
        step["preset"] = p.preset
    if lora.source is not None:
        step["source"] = lora.source.name
    meta = with_provenance(lora.metadata, step)
    meta["block_vector_string"] = p.weights.text
    out = lora.derive(store, meta, same_modules=True)
    summary = {"kept_blocks": p.kept(), "removed_blocks": p.removed(), "scaled_blocks": p.scaled(),
               "te_weight": p.te_weight, "preset": p.preset, "vector": p.weights.text, "mode": p.weights.mode,
               "tensors_in": len(lora.store.keys()), "tensors_out": len(store.keys()),
               "bytes_in": lora.total_bytes(), "bytes_out": out.total_bytes(), "warnings": warnings}
    return out, summary


def chop(lora: LoraFile, vector: str | None = None, preset: str | None = None,
         te_weight: float = 1.0, check_values: bool = True) -> tuple[LoraFile, dict]:
    p = plan(lora, vector, preset, te_weight)
    if not p.scaled() and p.te_weight in (0, 1):  # a 0/1 chop copies byte ranges: no torch at all
        return apply(lora, p, check_values)
    from .threads import cpu_threads
    with cpu_threads(1):
        return apply(lora, p, check_values)


def chop_file(path: str | Path, vector: str | None = None, preset: str | None = None,
              output: str | Path | None = None, te_weight: float = 1.0,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Chop a file and save the result (default ``<stem>-chop.safetensors`` beside it, never overwriting);
    ``progress(bytes_written, bytes_total)`` follows the write. The file is read once: NaN/Inf is refused
    while each chunk is copied (the half-written file is removed, nothing appears under ``output``)."""
    lora = read(path)
    out, summary = chop(lora, vector, preset, te_weight, check_values=False)
    target = Path(output) if output else default_output(lora.source, "chop")
    written, meta = save(out, target, progress=progress, nonfinite=nonfinite_message(lora))
    summary["output"] = str(written)
    summary["bytes_in"], summary["bytes_out"] = Path(path).stat().st_size, written.stat().st_size
    summary["sshs_model_hash"] = meta.get("sshs_model_hash")
    return summary
