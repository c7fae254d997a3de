"""Block Impact Sweep (Chop Shop): render no LoRA, the full LoRA and one variant per block / group / preset
with ComfyUI's own sampler and LoRA patching, then rank the blocks by impact (core/sweep*.py)."""
from __future__ import annotations

import json

import torch
from comfy_api.v0_0_2 import io

from ..core.architectures import block_of
from ..core.errors import ChopShopError
from ..core.sweep import MODES, check_model, model_architectures, plan_sweep
from ..core.sweep_chart import grid, impact_chart
from ..core.sweep_impact import check_keep_share, energy_shares, report, tile_labels
from .common import CATEGORY, as_lora, image_tensor, lora_input, pil_image, preview_images, progress_bar
from .sweep_patcher import VariantPatcher

MODE_TOOLTIP = ("solo: no LoRA + only block i, one render per block. knock-out: the full LoRA minus block i. "
                "groups: only one group on (IN / MID / OUT for SD1.5 and SDXL; runs of group_size consecutive "
                "blocks for DiTs). presets: each preset made for the LoRA's architecture, as Block Chop applies it.")


def sampler_options():
    import comfy.samplers
    return comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS


def split_patches(model, lora, architecture: str) -> dict[str | None, dict]:
    """ComfyUI's own LoRA patches of the diffusion-model modules, by block label (None: non-block layers).
    Loaded once; every render shares these patch tensors (nothing is reloaded or copied)."""
    import comfy.lora
    import comfy.lora_convert
    from ..core.architectures import ARCHITECTURES
    keys = [k for m in lora.modules if not m.is_text_encoder for k in m.keys]
    sd = comfy.lora_convert.convert_lora({k: lora.store.tensor(k) for k in keys})
    loaded = comfy.lora.load_lora(sd, comfy.lora.model_lora_keys_unet(model.model, {}))
    arch = ARCHITECTURES[architecture]
    out: dict[str | None, dict] = {}
    for key, patch in loaded.items():
        name = key if isinstance(key, str) else key[0]
        out.setdefault(block_of(arch, name), {})[key] = patch
    return out


def check_patches(patches: dict, present: list[str], model_name: str) -> list[str]:
    if not any(lab in patches for lab in present):
        raise ChopShopError(f"none of the LoRA's block modules matches a layer of this model ({model_name}); "
                            "is it a LoRA for another model of the same family?")
    missing = [lab for lab in present if lab not in patches]
    return [f"block {lab}: none of its modules matches a layer of this model; it renders as no change"
            for lab in missing]


def sample(model, latent: dict, seed, steps, cfg, sampler_name, scheduler, positive, negative, on_step):
    """One render as KSampler does it (nodes.common_ksampler), with our step callback."""
    import comfy.sample
    import comfy.utils
    image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(image, seed, latent.get("batch_index"))
    return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, image,
                               denoise=1.0, noise_mask=latent.get("noise_mask"), callback=on_step,
                               disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def decode(vae, samples: torch.Tensor) -> torch.Tensor:
    """VAE Decode of one render (one call per render: a batched decode is not bitwise the same)."""
    images = vae.decode(samples)
    if images.ndim == 5:   # video VAEs: (batch, frames, H, W, C) -> frames as images, as VAEDecode does
        images = images.reshape(-1, *images.shape[-3:])
    return images


class Renderer:
    """Renders variants one by one: one ComfyUI progress bar over every step of every render (with the
    sampler's previews, as KSampler shows them), Cancel checked between renders and at every step (the
    sampler's own interrupt check runs too). A render whose latent is bitwise one already decoded reuses that
    image (the VAE is deterministic): blocks that change nothing cost no decode."""

    def __init__(self, model, vae, patches, strength, settings: dict, total: int):
        import latent_preview
        self.patcher = VariantPatcher(model, patches, strength)
        self.vae, self.settings = vae, settings
        self.steps = settings["steps"]
        self.total = total * self.steps
        self.done = 0
        self.progress, self.interrupted = progress_bar()
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        self.decoded: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_step(self, step, x0, x, total_steps):
        self.interrupted()
        preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
        self.progress(min(self.done + step + 1, self.total), self.total, preview)

    def render(self, variant) -> tuple[torch.Tensor, torch.Tensor]:
        self.interrupted()
        m = self.patcher.model_for(variant)
        s = self.settings
        latent = sample(m, s["latent"], s["seed"], self.steps, s["cfg"], s["sampler_name"], s["scheduler"],
                        s["positive"], s["negative"], self.on_step)
        self.done += self.steps
        self.progress(min(self.done, self.total), self.total)
        return latent, self.image(latent)

    def image(self, latent: torch.Tensor) -> torch.Tensor:
        for seen, img in self.decoded:
            if seen.shape == latent.shape and seen.dtype == latent.dtype and torch.equal(seen, latent):
                return img
        img = decode(self.vae, latent)
        self.decoded.append((latent, img))
        return img


def summary_text(rep: dict) -> str:
    lines = [f"{rep['architecture']} {rep['mode']} sweep, {rep['renders']} renders; impact = {rep['impact_definition']}"]
    for r in rep["blocks"][:12]:
        px = f"  px {r['impact_pixels']:.3f}" if r.get("impact_pixels") is not None else ""
        lines.append(f"  #{r['rank']:<3d} {r['label']:<28} impact {r['impact']:.3f}{px}  energy {100 * r['energy']:.1f}%")
    if len(rep["blocks"]) > 12:
        lines.append(f"  ... {len(rep['blocks']) - 12} more")
    lines.append(f"Suggested vector (keep_share {rep['keep_share']:g}): {rep['suggested_vector']}")
    lines.append(f"Kept blocks: {', '.join(rep['suggested_blocks'])}")
    lines += [f"Warning: {w}" for w in rep["warnings"][:10]]
    return "\n".join(lines)


class ChopShopBlockSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        samplers, schedulers = sampler_options()
        return io.Schema(
            node_id="ChopShopBlockSweep",
            display_name="Block Impact Sweep (Chop Shop)",
            category=CATEGORY,
            description="Finds which blocks carry a LoRA's character or style: renders the image without the "
                        "LoRA, with the full LoRA, then one image per block, group or preset (same seed and "
                        "settings, ComfyUI's own sampler and LoRA patching), ranks them by impact and suggests "
                        "a Block Chop vector.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model the LoRA is for (not patched with it)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional text encoder. The sweep varies the diffusion-model blocks only: "
                                      "the prompts arrive encoded, so the LoRA's text-encoder modules are not "
                                      "swept. Connected, it makes the report count those modules."),
                lora_input(tooltip="The LoRA to sweep (from Load LoRA File or any Chop Shop node)."),
                io.Vae.Input("vae", tooltip="Decodes every render (grid, images, pixel-space impacts)."),
                io.Conditioning.Input("positive", tooltip="Positive prompt, shared by every render."),
                io.Conditioning.Input("negative", tooltip="Negative prompt, shared by every render."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (e.g. Empty Latent Image); "
                                                        "every render starts from it."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed, the same for every render (so differences come from the LoRA)."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps of every render."),
                io.Float.Input("cfg", default=6.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale of every render."),
                io.Combo.Input("sampler_name", options=samplers, tooltip="Sampler of every render."),
                io.Combo.Input("scheduler", options=schedulers, tooltip="Noise schedule of every render."),
                io.Combo.Input("mode", options=list(MODES), default="solo", tooltip=MODE_TOOLTIP),
                io.Int.Input("group_size", default=4, min=1, max=64,
                             tooltip="groups mode on DiTs (Flux, Wan, Qwen-Image, Z-Image ...): blocks per group, "
                                     "runs of consecutive blocks within a section. UNets group as IN / MID / OUT."),
                io.Float.Input("strength", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="LoRA strength of the full render and of every variant (1 = as trained)."),
                io.Float.Input("keep_share", default=0.9, min=0.01, max=1.0, step=0.01,
                               tooltip="The suggested vector keeps the fewest top-ranked blocks whose impacts add "
                                       "up to this share of all impacts (presets: the smallest preset within "
                                       "1 - keep_share of the full LoRA)."),
            ],
            outputs=[
                io.Image.Output("grid", display_name="grid",
                                tooltip="Every render as a labelled tile: no LoRA, full LoRA, then each variant "
                                        "(label, energy share, impact; green frame: kept by the suggestion)."),
                io.Image.Output("images", display_name="images", tooltip="The renders as a batch, in grid order."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: mode, architecture, blocks ranked by impact (label, energy, impact, "
                                         "pixel impact, gap to full), suggested_vector."),
                io.String.Output("vector", display_name="vector",
                                 tooltip="The suggested block vector; connect it to Block Chop's vector."),
                io.Image.Output("chart", display_name="chart",
                                tooltip="Bar chart of the impacts, highest first, with energy shares."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, lora, vae, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                scheduler, mode, group_size, strength, keep_share, clip=None) -> io.NodeOutput:
        lf = as_lora(lora)
        keep_share = check_keep_share(keep_share)
        plan = plan_sweep(lf.architecture, lf.blocks(), mode, int(group_size))
        config = type(model.model.model_config)
        check_model(lf.architecture, model_architectures([c.__name__ for c in config.__mro__],
                                                         getattr(model.model.model_config, "unet_config", {})),
                    config.__name__)
        patches = split_patches(model, lf, lf.architecture)
        plan.warnings += check_patches(patches, plan.present, config.__name__)
        if clip is not None:
            te = sum(1 for m in lf.modules if m.is_text_encoder)
            if te:
                plan.warnings.append(f"{te} text-encoder modules are not swept (the prompts arrive encoded)")
        settings = dict(latent=latent_image, seed=seed, steps=int(steps), cfg=cfg, sampler_name=sampler_name,
                        scheduler=scheduler, positive=positive, negative=negative)
        renderer = Renderer(model, vae, patches, float(strength), settings, len(plan.renders()))
        latents, images = [], []
        for v in plan.renders():
            x, img = renderer.render(v)
            latents.append(x)
            images.append(img)
        rep = report(plan, energy_shares(lf), latents, images, keep_share)
        return cls.outputs(rep, plan, images)

    @classmethod
    def outputs(cls, rep: dict, plan, images: list[torch.Tensor]) -> io.NodeOutput:
        highlight = {2 + i for i in rep["suggested_variants"]}
        grid_t = image_tensor(grid([pil_image(img[0]) for img in images], tile_labels(rep), highlight))
        chart_t = image_tensor(impact_chart(rep))
        text = summary_text(rep)
        previews = preview_images(cls, grid_t, chart_t)
        return io.NodeOutput(grid_t, torch.cat(images, dim=0), json.dumps(rep, indent=1), rep["suggested_vector"],
                             chart_t, ui={"images": previews, "text": [text], "chopshop_sweep": [rep]})
