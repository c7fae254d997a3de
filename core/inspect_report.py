"""The Block Layout Inspector report: blocks, counts, energy shares, adapter and rank statistics.

Counts come from the header alone. Energies (‖ΔW‖_F² per module, in factored form) stream one module at a
time, so memory stays near the largest module.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Callable

from . import adapters
from .architectures import block_name, full_layout
from .lora_file import LoraFile, Module, Problem
from .module_checks import alpha_problem, raw_nonfinite
from .threads import cpu_threads

# Metadata keys worth a line in the summary (ss_* training facts).
SUMMARY_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args",
                "ss_base_model_version", "ss_output_name", "ss_steps", "ss_epoch", "ss_learning_rate",
                "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer", "ss_mixed_precision", "ss_resolution",
                "ss_num_train_images", "ss_training_comment", "ss_sd_model_name", "modelspec.architecture",
                "modelspec.title", "sshs_model_hash")


def module_energy(lora: LoraFile, m: Module) -> float | None:
    """‖ΔW‖_F² of a module, or None when it cannot be measured. A module whose values turn out broken
    (NaN/Inf in any tensor, an alpha of 0, a delta that overflows) is marked ``Problem.BROKEN``
    here and not measured."""
    if m.has_problem(Problem.INCOMPLETE, Problem.BROKEN):
        return None
    broken = next((f"{role} holds NaN or Inf values" for role, key in m.roles.items()
                   if raw_nonfinite(*lora.store.raw(key))), None)
    raw = {role: lora.store.tensor(key) for role, key in m.roles.items()}
    broken = broken or alpha_problem(m.kind, raw.get("alpha"), m.nominal_rank is not None)
    e = None
    if not broken and m.kind not in adapters.NEEDS_BASE:
        t = {r: (v.float() if v.is_floating_point() else v) for r, v in raw.items()}
        e = adapters.energy(m.kind, t, lora.gamma(m))
        if not math.isfinite(e):
            broken, e = "its delta overflows (energy is not finite)", None
    if broken:
        m.problems.append(Problem(Problem.BROKEN, f"broken module: {broken}"))
    return e


def _rank_stats(values: list[float]) -> dict | None:
    if not values:
        return None
    c = Counter(values)
    return {"min": min(values), "max": max(values), "mean": round(statistics.fmean(values), 4),
            "values": {str(k): v for k, v in sorted(c.items())}}


def inspect(lora: LoraFile, energies: bool = True,
            progress: Callable[[int, int], None] | None = None) -> dict:
    """The report as one JSON-ready dict (key names are a contract read by other tools)."""
    arch = lora.arch
    labels = lora.blocks()
    by_block: dict[str, list[Module]] = {lab: [] for lab in labels}
    passthrough: list[Module] = []
    for m in lora.modules:
        (by_block[m.block] if m.block else passthrough).append(m)
    energy_of: dict[str, float | None] = {}
    if energies:
        with cpu_threads(1):  # many tiny Gram products: threads only cost under load (core/threads.py)
            for i, m in enumerate(lora.modules):
                energy_of[m.base] = module_energy(lora, m)
                if progress:
                    progress(i + 1, len(lora.modules))
    total_energy = sum(e for m in lora.modules if m.block and (e := energy_of.get(m.base)) is not None)
    blocks = [_block_entry(i, block_name(arch, lab), lab, by_block[lab], energy_of if energies else None,
                           total_energy) for i, lab in enumerate(labels)]
    te = [m for m in passthrough if m.is_text_encoder]
    other = [m for m in passthrough if not m.is_text_encoder]
    report = {
        "file": str(lora.source) if lora.source else lora.name,
        "architecture": lora.architecture,
        "architecture_title": arch.title if arch else "unknown",
        "format": lora.format,
        "formats": lora.formats,
        "tensors": len(lora.store.keys()),
        "modules": len(lora.modules),
        "bytes": lora.total_bytes(),
        "adapter_counts": dict(Counter(adapters.KIND_NAMES[m.kind] for m in lora.modules)),
        "dora_modules": sum(1 for m in lora.modules if m.dora),
        "blocks": blocks,
        "vector_template": ",".join(["1", *labels]),
        "full_layout": ",".join(["1", *full_layout(arch.id)]) if arch else None,
        "pass_through": _pass_through(passthrough, te, other, lora.unknown_keys),
        "text_encoders": dict(Counter(m.component for m in te)),
        "unresolved": [{"module": m.base, "problems": [str(p) for p in m.problems]} for m in lora.modules if m.problems][:100],
        "unresolved_count": sum(1 for m in lora.modules if m.problems),
        "broken": [{"module": m.base, "problems": [str(p) for p in m.problems if p.kind == Problem.BROKEN]}
                   for m in lora.modules if m.has_problem(Problem.BROKEN)][:100],
        "broken_count": sum(1 for m in lora.modules if m.has_problem(Problem.BROKEN)),
        "ranks": _rank_stats([r for m in lora.modules if (r := m.nominal_rank) is not None]),
        "metadata": {k: lora.metadata[k] for k in SUMMARY_KEYS if k in lora.metadata},
        "metadata_keys": len(lora.metadata),
    }
    if energies:
        alphas = [a for m in lora.modules if not m.has_problem(Problem.BROKEN) and (a := lora.alpha(m)) is not None]
        report["alphas"] = _rank_stats(alphas)
        report["energy_total"] = total_energy
        te_energy = [e for m in te if (e := energy_of.get(m.base)) is not None]
        report["pass_through"]["text_encoder_energy"] = sum(te_energy)
    return report


def render_text(report: dict) -> str:
    """A readable layout in the spirit of chop_blocks.py, with module counts and energy shares added."""
    lines = [f"File: {report['file']}",
             f"Architecture: {report['architecture_title']} ({report['architecture']}), format: {report['format']}",
             f"Tensors: {report['tensors']}, modules: {report['modules']}, "
             f"adapters: {', '.join(f'{k} {v}' for k, v in report['adapter_counts'].items())}"]
    if report["ranks"]:
        r = report["ranks"]
        lines.append(f"Rank: min {r['min']}, max {r['max']}, mean {r['mean']:.1f}"
                     + (f"; alpha: {', '.join(f'{k}x{v}' for k, v in report['alphas']['values'].items())}"
                        if report.get("alphas") else ""))
    lines.append("Blocks layout:")
    width = max((len(b["name"]) for b in report["blocks"]), default=0)
    for b in report["blocks"]:
        share = f"  energy {100 * b['energy_share']:5.1f}%" if b.get("energy_share") is not None else ""
        lines.append(f"  [{b['index']:2d}] {b['label']:>5} {b['name']:>{width}}  tensors={b['tensors']:<4d} "
                     f"modules={b['modules']:<4d}{share}")
    lines.append(f'Vector string : "{report["vector_template"]}"')
    pt = report["pass_through"]
    lines.append(f"Pass through: {pt['tensors']} tensors, {pt['modules']} modules "
                 f"({pt['text_encoder_modules']} text encoder, {pt['other_modules']} other, "
                 f"{pt['unknown_key_count']} unknown keys)")
    if report["text_encoders"]:
        lines.append("Text encoders: " + ", ".join(f"{k} {v}" for k, v in report["text_encoders"].items()))
    if report.get("broken_count"):
        lines.append(f"Broken modules: {report['broken_count']} (unusable; chop and resize refuse to write them):")
        for u in report["broken"][:20]:
            lines.append(f"  {u['module']}: {'; '.join(u['problems'])}")
    if report["unresolved_count"]:
        lines.append(f"Unresolved modules: {report['unresolved_count']} (kept, passed through):")
        for u in report["unresolved"][:10]:
            lines.append(f"  {u['module']}: {'; '.join(u['problems'])}")
    if report["metadata"]:
        lines.append("Training metadata:")
        for k, v in report["metadata"].items():
            v = v if len(v) <= 100 else v[:97] + "..."
            lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def render_chop_blocks(report: dict) -> str:
    """The layout in chop_blocks.py's exact words (its "layers" are tensor counts)."""
    width = max((len(b["name"]) for b in report["blocks"]), default=0)
    lines = ["INFO: Blocks layout:"]
    lines += [f"INFO:   [{b['index']:2d}] {b['name']:>{width}} layers={b['tensors']}" for b in report["blocks"]]
    lines.append(f'INFO: Vector string : "{report["vector_template"]}"')
    lines.append(f"INFO: Pass through layers: {report['pass_through']['tensors']}")
    return "\n".join(lines)


def _block_entry(index: int, name: str, label: str, mods: list[Module], energy_of: dict | None,
                 total_energy: float) -> dict:
    """One block's row; ``energy_of`` None when energies were not computed."""
    entry = {"index": index, "name": name, "label": label,
             "tensors": sum(len(m.roles) for m in mods), "modules": len(mods)}
    if energy_of is None:
        entry["energy_share"] = None
        return entry
    e = [energy_of[m.base] for m in mods if energy_of[m.base] is not None]
    entry["energy"] = sum(e)
    entry["energy_share"] = (sum(e) / total_energy) if total_energy > 0 else 0.0
    entry["unmeasured_modules"] = sum(1 for m in mods if energy_of[m.base] is None)
    return entry


def _pass_through(passthrough: list[Module], te: list[Module], other: list[Module], unknown: list[str]) -> dict:
    """What no block holds: text-encoder modules, other modules, unknown keys."""
    return {
        "tensors": sum(len(m.roles) for m in passthrough) + len(unknown),
        "modules": len(passthrough),
        "text_encoder_modules": len(te),
        "text_encoder_tensors": sum(len(m.roles) for m in te),
        "other_modules": len(other),
        "other": sorted(m.base for m in other)[:50],
        "unknown_keys": unknown[:50],
        "unknown_key_count": len(unknown),
    }
