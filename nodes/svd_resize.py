"""SVD Resize (Chop Shop): re-factor every module of a LoRA by exact SVD and a rank rule."""
from __future__ import annotations

from comfy_api.v0_0_2 import io

from ..core.base_model import BaseWeights
from ..core.errors import ChopShopError
from ..core.resize import Rule, render_report, resize
from .common import CATEGORY, as_lora, lora_input, lora_output, progress_bar

RULES = ["rank", "sv_fro", "sv_ratio", "sv_cumulative", "fro_ckpt", "recipe", "size"]
DTYPES = ["fp16", "bf16", "fp32", "match"]
VALUE_TOOLTIP = ("The rule's parameter. rank: the new rank (whole number, e.g. 16). sv_fro: fraction of the "
                 "Frobenius norm to keep, 0-1 (e.g. 0.9). sv_ratio: keep singular values above s1/value (>= 1, "
                 "e.g. 20). sv_cumulative: fraction of the sum of singular values to keep, 0-1. fro_ckpt: log10 "
                 "threshold of the kept delta's norm relative to the base weight (e.g. -3.55; needs the model/"
                 "clip inputs). size: target file size in MiB.")


def base_weights(model=None, clip=None) -> BaseWeights | None:
    """W0 lookups over the connected MODEL / CLIP (their unpatched weights, ComfyUI model keys)."""
    sd = {}
    for patcher, module in ((model, getattr(model, "model", None)),
                            (getattr(clip, "patcher", None), getattr(clip, "cond_stage_model", None))):
        if module is None:
            continue
        part = dict(module.state_dict())
        for k, b in (getattr(patcher, "backup", None) or {}).items():   # weights currently patched in place
            if k in part:
                part[k] = b.weight if hasattr(b, "weight") else b[0]
        sd.update(part)
    if not sd:
        return None
    return BaseWeights(sd.get, sd.keys(), "the connected model")


def make_rule(rule: str, value: float, max_rank: int, recipe: str = "") -> Rule:
    if rule not in RULES:
        raise ChopShopError(f"unknown rank rule {rule!r}; valid: {', '.join(RULES)}")
    cap = int(max_rank) if max_rank and int(max_rank) > 0 else None
    if rule == "recipe":
        if not recipe.strip():
            raise ChopShopError("rule 'recipe' needs the recipe text, e.g. fro_ckpt=1,thr=-3.55")
        return Rule("recipe", recipe.strip(), cap)
    v: float | int = float(value)
    if rule == "rank":
        if not v.is_integer():
            raise ChopShopError(f"rank must be a whole number >= 1, got {value}")
        v = int(v)
    return Rule(rule, v, cap)


class ChopShopSVDResize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopSVDResize",
            display_name="SVD Resize (Chop Shop)",
            category=CATEGORY,
            description="Resizes every module of a LoRA (LoRA, LoCon, LoHa, LoKr, full diffs) by an exact SVD of "
                        "its weight delta and a rank rule; the result is a plain LoRA/LoCon whose alpha keeps "
                        "the original scale. Runs on ComfyUI's device, shows progress and can be cancelled.",
            inputs=[
                lora_input(tooltip="The LoRA to resize."),
                io.Combo.Input("rule", options=RULES, default="sv_fro",
                               tooltip="How each module's new rank is chosen: rank (fixed), sv_fro (keep a "
                                       "fraction of the Frobenius norm), sv_ratio (singular values above s1/ratio), "
                                       "sv_cumulative (fraction of the sum of singular values), fro_ckpt (relative "
                                       "to the base model's weight; connect model/clip), recipe (the recipe input), "
                                       "size (whole file to a MiB budget)."),
                io.Float.Input("value", default=0.9, min=-100.0, max=1_000_000.0, step=0.01, tooltip=VALUE_TOOLTIP),
                io.Int.Input("max_rank", default=0, min=0, max=4096,
                             tooltip="Upper bound on every module's new rank; 0 = no cap."),
                io.Combo.Input("dtype", options=DTYPES, default="fp16",
                               tooltip="Storage dtype of the new factors; 'match' keeps each module's dtype."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional base MODEL the LoRA was trained on: supplies the diffusion-model "
                                       "weights the fro_ckpt rule compares against."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional base CLIP: supplies the text-encoder weights for fro_ckpt when the "
                                      "LoRA trains text-encoder modules."),
                io.String.Input("recipe", default="fro_ckpt=1,thr=-3.55", optional=True,
                                tooltip="Used when rule is 'recipe': elias-gaeros' score recipe, e.g. "
                                        "fro_ckpt=1,thr=-3.55 or spn_ckpt=1,size=50 (terms fro_ckpt, spn_ckpt, "
                                        "fro_lora, spn_lora, params; thr or size in MiB). *_ckpt terms need the "
                                        "model/clip inputs."),
            ],
            outputs=[
                lora_output("The resized LoRA (a new one; the input is untouched)."),
                io.String.Output("report", display_name="report",
                                 tooltip="Per-module ranks before/after, Frobenius retention per module and block, "
                                         "outcomes and warnings."),
            ],
        )

    @classmethod
    def execute(cls, lora, rule, value, max_rank, dtype, model=None, clip=None, recipe="") -> io.NodeOutput:
        import comfy.model_management as mm
        lf = as_lora(lora)
        r = make_rule(rule, value, max_rank, recipe or "")
        base = None
        if r.needs_base:
            base = base_weights(model, clip)
            if base is None:
                raise ChopShopError(f"rule {r.describe()} needs the base model's weights: connect the model input "
                                    "(and clip, if the LoRA trains text encoders)")
        progress, cancel = progress_bar()
        try:
            out, report = resize(lf, r, dtype=dtype, device=mm.get_torch_device(), base=base,
                                 progress=progress, check_cancel=cancel)
        finally:
            mm.soft_empty_cache()
        text = render_report(report)
        return io.NodeOutput(out, text, ui={"text": [text]})
