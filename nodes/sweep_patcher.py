"""Block Impact Sweep, patching: every variant is ComfyUI's own LoRA patches on one clone of the model.

A variant's patches are ComfyUI's (comfy.lora.load_lora, split by block in block_sweep.split_patches) added
to a clone of the model at the variant's block weights with ``ModelPatcher.add_patches``, as Apply LoRA /
LoraLoader do. Sampling with a new clone makes ComfyUI unpatch and re-patch every LoRA'd weight (a new
``patches_uuid`` is a full reload). ``VariantPatcher`` avoids that where it is safe:

* the first variant goes through ComfyUI's own loading (``comfy.sample.sample`` -> ``load_models_gpu``);
* then, while that clone is loaded whole on the CPU, each next variant only touches the weights whose patches
  differ from the previous variant's: restored from ComfyUI's own backup of the original weight, or patched
  by ``ModelPatcher.patch_weight_to_device`` (the call ComfyUI's load makes, so the weights are bitwise the
  same), or, for a weight patched at the full LoRA's strength before, set back from a cache of those patched
  tensors (references, no copies: at most what the full-LoRA render holds anyway). The clone then records the
  weights as current (``current_weight_patches_uuid``), so sampling finds the model loaded.

The model is never reloaded or copied. Anything else (a GPU, low-VRAM loading, weights with their own set
function, hooks, in-place weight updates) takes ComfyUI's own path: a fresh clone per variant.
"""
from __future__ import annotations

import uuid


def variant_clone(model, patches: dict, variant, strength: float):
    """A clone of ``model`` with the variant's patches (block weight x strength); no patches for no LoRA."""
    by_weight: dict[float, dict] = {}
    for label, group in patches.items():
        # layers outside the blocks the core found in the LoRA (non-block, or not in the reference layout of
        # the architecture but present in this model) follow the non-block weight
        w = variant.weights[label] if label in variant.weights else variant.others
        if w != 0:
            by_weight.setdefault(w * strength, {}).update(group)
    m = model.clone()
    for s, group in by_weight.items():
        m.add_patches(group, s)
    return m


def same_patches(a: list | None, b: list | None) -> bool:
    """True when two ModelPatcher patch lists of one key are the same patches at the same strengths."""
    if not a or not b:
        return not a and not b
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] is y[1] and x[2] == y[2] and x[3] == y[3] and x[4] is y[4] for x, y in zip(a, b))


class VariantPatcher:
    """Hands out the model patched for each variant in turn (see the module docstring)."""

    def __init__(self, model, patches: dict, strength: float):
        self.model, self.patches, self.strength = model, patches, strength
        self.current = None          # the clone ComfyUI loaded last for us
        self.cache: dict[str, tuple[list, object]] = {}
        self.switched = 0            # variants set by touching only the changed weights (for tests and benches)

    def model_for(self, variant):
        target = variant_clone(self.model, self.patches, variant, self.strength)
        changed = self.changed_keys(target.patches)
        if changed is not None and self.can_switch(changed):
            self.switch(target.patches, changed)
            self.switched += 1
            return self.current
        self.current = target
        return target

    def changed_keys(self, patches: dict) -> list[str] | None:
        c = self.current
        if c is None:
            return None
        keys = dict.fromkeys([*c.patches, *patches])          # both, in a fixed order
        return [k for k in keys if not same_patches(c.patches.get(k), patches.get(k))]

    def can_switch(self, changed: list[str]) -> bool:
        """Only while ComfyUI holds our clone loaded whole on the CPU, its weights recorded as matching its
        patches, with no hooks and no in-place updates, and every changed weight a plain parameter."""
        import comfy.model_management
        from comfy.model_patcher import get_key_weight
        c = self.current
        m = c.model
        if not comfy.model_management.is_device_cpu(c.load_device) or c.weight_inplace_update:
            return False
        if m.current_weight_patches_uuid != c.patches_uuid or m.model_lowvram or m.model_loaded_weight_memory <= 0:
            return False
        if c.hook_patches or c.current_hooks is not None or c.forced_hooks is not None:
            return False
        return all(get_key_weight(m, k)[1] is None for k in changed)

    def switch(self, patches: dict, changed: list[str]) -> None:
        """Set the changed weights of the current clone to ``patches``. Until done the clone's record does not
        match the weights, so an error half-way makes ComfyUI's next load restore and re-patch everything."""
        import comfy.utils
        from comfy.model_patcher import get_key_weight
        c = self.current
        c.patches_uuid = uuid.uuid4()
        for k in changed:
            if k in c.backup:
                comfy.utils.set_attr_param(c.model, k, c.backup[k].weight)
            new = patches.get(k)
            if not new:
                c.patches.pop(k, None)
                continue
            c.patches[k] = new
            hit = self.cache.get(k)
            if hit is not None and same_patches(hit[0], new) and k in c.backup:
                comfy.utils.set_attr_param(c.model, k, hit[1])
                continue
            c.patch_weight_to_device(k, device_to=c.load_device)
            if all(p[0] == self.strength for p in new):       # block weight 1: the full LoRA's weight
                self.cache[k] = (new, get_key_weight(c.model, k)[0])
        c.model.current_weight_patches_uuid = c.patches_uuid
