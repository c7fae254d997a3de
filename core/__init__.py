"""LoRA Chop Shop core: read, inspect, chop and resize LoRA/LyCORIS .safetensors files.

Pure torch + safetensors + numpy; no ComfyUI import, relative imports only, so it runs inside ComfyUI
and from the command line (``python -m core ...``) alike.
"""
