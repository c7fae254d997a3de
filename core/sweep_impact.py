"""Block Impact Sweep, measuring: impacts, ranking, the suggested vector and the JSON report.

With x_base the render without the LoRA, x_full the render with the whole LoRA and x_v a variant's render
(latents before the VAE; the same formulas on the decoded pixels give the pixel-space figures), and
D = mean|x_full - x_base| (the whole LoRA's effect):

* solo, groups, presets: impact_v = mean|x_v - x_base| / D   (how much of the effect the variant alone makes)
* knock-out:             impact_v = mean|x_full - x_v| / D   (how much of the effect is lost without it)
* every mode:            gap_v    = mean|x_v - x_full| / D   (how far the variant is from the full LoRA)

A block whose weight delta is exactly zero renders bit-identically to the image without it, so its impact is
exactly 0. The suggested vector keeps the fewest ranked units (blocks or groups) whose impacts add up to at
least ``keep_share`` of the sum of all impacts; in presets mode it is the preset with the fewest blocks whose
gap is at most 1 - keep_share. Pure torch; no ComfyUI import.
"""
from __future__ import annotations

import torch

from .errors import ChopShopError
from .sweep import SweepPlan, Variant
from .vector import format_vector

REL_TOL = 1e-12


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean|a - b| over every element, in float64 (exactly 0.0 when a and b are equal)."""
    if a.shape != b.shape:
        raise ValueError(f"renders differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().mean())


def check_keep_share(keep_share: float) -> float:
    if keep_share is None or keep_share != keep_share or not 0 < keep_share <= 1:
        raise ChopShopError(f"keep_share must be a number in (0, 1], got {keep_share!r}")
    return float(keep_share)


def impacts(plan: SweepPlan, renders: list[torch.Tensor]) -> tuple[list[float], list[float], float]:
    """(impact per variant, gap to full per variant, D) from the renders in ``plan.renders()`` order
    (no LoRA, full LoRA, variants...). Every impact is 0 when the LoRA changes nothing (D == 0)."""
    if len(renders) != 2 + len(plan.variants):
        raise ValueError(f"expected {2 + len(plan.variants)} renders, got {len(renders)}")
    base, full, outs = renders[0], renders[1], renders[2:]
    d = mean_abs_diff(full, base)
    if d == 0:
        return [0.0] * len(outs), [0.0] * len(outs), 0.0
    imp, gap = [], []
    for v, x in zip(plan.variants, outs):
        g = mean_abs_diff(x, full) / d
        gap.append(g)
        imp.append(g if v.kind == "knock-out" else mean_abs_diff(x, base) / d)
    return imp, gap, d


def unit_energy(v: Variant, shares: dict[str, float]) -> float:
    """The energy share of the blocks a variant is about (presets: weighted by w^2, as dW scales by w)."""
    if v.kind == "preset":
        return sum(shares.get(b, 0.0) * v.weights[b] ** 2 for b in v.weights)
    return sum(shares.get(b, 0.0) for b in v.blocks)


def ranking(values: list[float]) -> list[int]:
    """Indices by decreasing value; ties keep model/variant order."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def vector_keeping(plan: SweepPlan, kept: set[str]) -> str:
    """A Block Chop vector over the blocks present: 1 for the kept blocks, 0 for the others."""
    return format_vector(1.0, [1.0 if lab in kept else 0.0 for lab in plan.present])


def suggest_blocks(plan: SweepPlan, imp: list[float], keep_share: float):
    """(blocks kept, vector, note, variant indices): the fewest top-ranked units whose impacts reach
    keep_share of the total."""
    total = sum(imp)
    if total <= 0:
        return list(plan.present), vector_keeping(plan, set(plan.present)), \
            "no variant changed the render; every block is kept", []
    kept: set[str] = set()
    chosen: list[int] = []
    acc = 0.0
    for i in ranking(imp):
        if acc >= keep_share * total * (1 - REL_TOL):
            break
        acc += imp[i]
        kept.update(plan.variants[i].blocks)
        chosen.append(i)
    blocks = [lab for lab in plan.present if lab in kept]
    return blocks, vector_keeping(plan, kept), None, chosen


def suggest_preset(plan: SweepPlan, gap: list[float], keep_share: float):
    """The preset with the fewest blocks that comes within 1 - keep_share of the full LoRA."""
    limit = 1 - keep_share + REL_TOL
    ok = [i for i, g in enumerate(gap) if g <= limit]
    if not ok:
        return list(plan.present), vector_keeping(plan, set(plan.present)), \
            f"no preset comes within {1 - keep_share:.0%} of the full LoRA; every block is kept", []
    best = min(ok, key=lambda i: (len(plan.variants[i].kept()), gap[i], i))
    v = plan.variants[best]
    return v.kept(), format_vector(1.0, [v.weights[lab] for lab in plan.present]), f"preset: {v.name}", [best]


def suggest(plan: SweepPlan, imp: list[float], gap: list[float], keep_share: float):
    keep_share = check_keep_share(keep_share)
    if plan.mode == "presets":
        return suggest_preset(plan, gap, keep_share)
    return suggest_blocks(plan, imp, keep_share)


def report(plan: SweepPlan, shares: dict[str, float], latents: list[torch.Tensor],
           pixels: list[torch.Tensor] | None = None, keep_share: float = 0.9) -> dict:
    """The sweep report: {"mode", "architecture", "blocks": [{"label", "energy", "impact", ...}] (ranked,
    highest impact first), "suggested_vector", ...}. ``latents``/``pixels`` in ``plan.renders()`` order."""
    imp, gap, d = impacts(plan, latents)
    imp_px, gap_px, d_px = impacts(plan, pixels) if pixels is not None else (None, None, None)
    kept, vector, note, chosen = suggest(plan, imp, gap, keep_share)
    rows = []
    for rank, i in enumerate(ranking(imp), 1):
        v = plan.variants[i]
        row = {"label": v.name, "energy": unit_energy(v, shares), "impact": imp[i],
               "impact_pixels": imp_px[i] if imp_px is not None else None, "gap_to_full": gap[i],
               "gap_to_full_pixels": gap_px[i] if gap_px is not None else None, "rank": rank, "index": i,
               "blocks": list(v.blocks)}
        rows.append(row)
    warnings = list(plan.warnings)
    if d == 0:
        warnings.append("the full LoRA renders exactly like no LoRA (mean|x_full - x_base| = 0): impacts are 0")
    if note and not note.startswith("preset:"):
        warnings.append(note)
    return {"mode": plan.mode, "architecture": plan.architecture, "blocks": rows, "suggested_vector": vector,
            "suggested_blocks": kept, "suggested_variants": chosen, "suggestion": note, "keep_share": keep_share,
            "present_blocks": list(plan.present), "renders": 2 + len(plan.variants), "group_size": plan.group_size,
            "full_vs_base": {"latent": d, "pixels": d_px},
            "impact_definition": IMPACT_DEFINITION[plan.mode], "warnings": warnings}


IMPACT_DEFINITION = {
    "solo": "mean|x_i - x_base| / mean|x_full - x_base| (only block i on), latents before the VAE",
    "knock-out": "mean|x_full - x_-i| / mean|x_full - x_base| (full LoRA without block i), latents before the VAE",
    "groups": "mean|x_g - x_base| / mean|x_full - x_base| (only group g on), latents before the VAE",
    "presets": "mean|x_p - x_base| / mean|x_full - x_base| (the LoRA chopped by preset p), latents before the VAE",
}


def tile_labels(rep: dict, energy_total: float = 1.0) -> list[list[str]]:
    """Text under each grid tile, in render order: no LoRA, full LoRA, then the variants."""
    px = rep["full_vs_base"]["pixels"]
    out = [["no LoRA", "base render", ""],
           ["full LoRA", f"energy {100 * energy_total:.1f}%", "impact 1.00" + (" | px 1.00" if px is not None else "")]]
    by_index = sorted(rep["blocks"], key=lambda r: r["index"])
    for r in by_index:
        line = f"impact {r['impact']:.2f}"
        if r.get("impact_pixels") is not None:
            line += f" | px {r['impact_pixels']:.2f}"
        out.append([f"#{r['rank']} {r['label']}", f"energy {100 * r['energy']:.1f}%", line])
    return out


def energy_shares(lora) -> dict[str, float]:
    """Each block's share of the LoRA's block energy (sum of ||dW||_F^2), from the inspector's report."""
    from .inspect_report import inspect
    return {b["label"]: b["energy_share"] for b in inspect(lora, energies=True)["blocks"]}
