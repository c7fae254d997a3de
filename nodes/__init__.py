"""ComfyUI nodes of LoRA Chop Shop: thin V3 shells over ``core`` (no math here)."""
