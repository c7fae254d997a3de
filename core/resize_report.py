"""The resize report: built once from the module results, given as a dict (JSON) or rendered as text.

Text order: rule, per-block summary, per-module lines (diffusion model first, text encoders after),
totals, warnings, size. The dict keeps the keys earlier versions had (``layers``, ``per_block``, ...).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from .resize_module import ModuleResult

MEASURED_OUTCOMES = ("resized", "kept", "converted", "restructured", "zero-dropped", "rank0-dropped",
                     "size-guarded")


def _per_block(measured: list[ModuleResult]) -> dict[str, dict]:
    per_block: dict[str, dict] = {}
    for lr in measured:
        label = lr.block or ("text encoder" if lr.component in ("clip_l", "clip_g", "t5xxl", "te") else "other")
        b = per_block.setdefault(label, {"modules": 0, "energy": 0.0, "energy_kept": 0.0, "rank_in": 0,
                                         "rank_out": 0})
        b["modules"] += 1
        b["energy"] += lr.energy
        b["energy_kept"] += lr.energy_kept
        b["rank_in"] += lr.rank_in or 0
        b["rank_out"] += lr.rank_out or 0
    for b in per_block.values():
        b["fro_retention"] = math.sqrt(b["energy_kept"] / b["energy"]) if b["energy"] > 0 else 1.0
    return per_block


@dataclass
class ResizeReport:
    rule: str
    device: str
    modules: list[ModuleResult]
    started: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        measured = [r for r in self.modules if r.fro_retention is not None and r.outcome in MEASURED_OUTCOMES]
        ret = [r.fro_retention for r in measured]
        mean = sum(ret) / len(ret) if ret else None
        e_all, e_kept = sum(r.energy for r in measured), sum(r.energy_kept for r in measured)
        outcomes: dict[str, int] = {}
        for r in self.modules:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        return {
            "rule": self.rule, "device": self.device,
            "layers": [{"name": r.name, "block": r.block, "type": r.kind, "form": r.form, "rank_in": r.rank_in,
                        "rank_out": r.rank_out, "fro_retention": r.fro_retention, "sum_retention": r.sum_retention,
                        "outcome": r.outcome, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out,
                        "text_encoder": r.component in ("clip_l", "clip_g", "t5xxl", "te"),
                        **({"note": r.note} if r.note else {})} for r in self.modules],
            "fro_retention_mean": mean,
            "fro_retention_std": math.sqrt(sum((x - mean) ** 2 for x in ret) / len(ret)) if ret else None,
            "fro_retention_weighted": math.sqrt(e_kept / e_all) if e_all > 0 else 1.0,
            "per_block": _per_block(measured),
            "outcomes": outcomes,
            "warnings": list(self.warnings),
            "compute_seconds": round(time.perf_counter() - self.started, 3),
        }


def _module_line(lr: dict, width: int) -> str:
    fr = "" if lr["fro_retention"] is None else f"fro {100 * lr['fro_retention']:6.2f}%"
    form = f" as {lr['form']}" if lr.get("outcome") == "restructured" else ""
    return (f"  {lr['name'][:width]:<{width}} {lr.get('block') or '-':>5} {lr['type']:<12} "
            f"{lr['rank_in'] if lr['rank_in'] is not None else '-':>4} -> "
            f"{lr['rank_out'] if lr['rank_out'] is not None else '-':<4} {fr} {lr['outcome']}{form}")


def render_report(result: dict) -> str:
    """Text of a report dict: per-block summary first, then modules (text encoders last), then totals."""
    lines = [f"Rule: {result['rule']}  device: {result.get('device', '?')}"]
    if result["per_block"]:
        lines.append("Per block (Frobenius retention, ranks summed):")
        for b, v in result["per_block"].items():
            lines.append(f"  {b:>12}: {100 * v['fro_retention']:6.2f}%  modules {v['modules']:4d}  "
                         f"rank {v['rank_in']} -> {v['rank_out']}")
    width = min(max((len(lr["name"]) for lr in result["layers"]), default=10), 72)
    layers = sorted(result["layers"], key=lambda lr: bool(lr.get("text_encoder")))  # stable: model order kept
    lines.append("Modules:")
    lines += [_module_line(lr, width) for lr in layers]
    mean = result["fro_retention_mean"]
    lines.append(f"Average Frobenius norm retention: {100 * (mean or 1):.2f}% (unweighted, as kohya prints)"
                 f" | std: {100 * (result['fro_retention_std'] or 0):.2f}%")
    lines.append(f"Energy-weighted retention: {100 * result['fro_retention_weighted']:.2f}%")
    lines.append("Outcomes: " + ", ".join(f"{k} {v}" for k, v in result["outcomes"].items()))
    for w in result.get("warnings", [])[:20]:
        lines.append(f"Warning: {w}")
    if len(result.get("warnings", [])) > 20:
        lines.append(f"... and {len(result['warnings']) - 20} more warnings")
    if "output" in result:
        lines.append(f"Size: {result['bytes_in'] / 2 ** 20:.2f} MiB -> {result['bytes_out'] / 2 ** 20:.2f} MiB"
                     f" in {result.get('seconds', result['compute_seconds'])} s")
        lines.append(f"Saved: {result['output']}")
    return "\n".join(lines)
