"""Read-only HTTP routes of LoRA Chop Shop, under /chopshop/ (registered by comfy_entrypoint).

GET /chopshop/layout?lora=<name from the loras list>   header-only read of a LoRA's block layout
GET /chopshop/layout?architecture=<id>                 an architecture's full layout
GET /chopshop/architectures                            [{"id", "title", "full_layout"}]
GET /chopshop/presets[?architecture=<id>]              core.presets.preset_rows
GET /chopshop/validate?vector=...&lora=...|&architecture=...   {"ok", "error", "weights", "mode"}

Only GETs, no side effects; LoRAs are read only from the loras folders (same resolution as the loader
node). Errors are JSON {"error": message} with 400 (bad request) or 404 (unknown file/architecture).
"""
from __future__ import annotations

import json
import logging
from collections import Counter

from ..core.architectures import ARCHITECTURES, block_name, full_layout
from ..core.errors import ChopShopError
from ..core.lora_file import read
from ..core.presets import load_presets, preset_rows
from ..core.vector import parse_vector

_REGISTERED = False


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _arch(arch_id: str):
    a = ARCHITECTURES.get(arch_id or "")
    if a is None:
        raise HttpError(404, f"unknown architecture {arch_id!r}; known: {', '.join(ARCHITECTURES)}")
    return a


def _read_lora(name: str):
    from .common import LoraNotFound, resolve_lora
    if not name or not name.strip():
        raise HttpError(400, "give ?lora=<name from the loras list> or ?architecture=<id>")
    try:
        path = resolve_lora(name)
    except LoraNotFound as e:
        raise HttpError(404, str(e)) from None
    return read(path)   # header only; tensors are never read here


def layout_for_lora(name: str) -> dict:
    with _read_lora(name) as lora:
        present = lora.blocks()
        counts = Counter(m.block for m in lora.modules if m.block)
        tensors = Counter()
        for m in lora.modules:
            if m.block:
                tensors[m.block] += len(m.roles)
        arch = lora.arch
        return {
            "lora": name,
            "architecture": lora.architecture,
            "architecture_title": arch.title if arch else "unknown",
            "present": present,
            "full_layout": list(full_layout(arch.id)) if arch else [],
            "blocks": [{"label": lab, "name": block_name(arch, lab) if arch else lab,
                        "modules": counts[lab], "tensors": tensors[lab]} for lab in present],
            "vector_template": ",".join(["1", *present]),
        }


def layout_for_architecture(arch_id: str) -> dict:
    a = _arch(arch_id)
    labels = list(full_layout(a.id))
    return {"architecture": a.id, "architecture_title": a.title, "present": labels, "full_layout": labels,
            "blocks": [{"label": lab, "name": block_name(a, lab), "modules": None, "tensors": None} for lab in labels],
            "vector_template": ",".join(["1", *labels])}


def architectures() -> list[dict]:
    return [{"id": a.id, "title": a.title, "full_layout": list(full_layout(a.id))} for a in ARCHITECTURES.values()]


def presets(architecture: str | None = None) -> list[dict]:
    if architecture:
        _arch(architecture)
    try:
        return preset_rows(load_presets(), architecture or None)
    except ChopShopError as e:
        raise HttpError(400, str(e)) from None


def validate(vector: str, lora: str | None = None, architecture: str | None = None) -> dict:
    if lora is not None and (lora.strip() or not architecture):
        lay = layout_for_lora(lora)
    elif architecture:
        lay = layout_for_architecture(architecture)
    else:
        raise HttpError(400, "give &lora=<name> or &architecture=<id> with the vector")
    if not lay["present"]:
        return {"ok": False, "error": f"no blocks found in this LoRA (architecture: {lay['architecture']}); "
                                      "nothing to chop", "weights": {}, "mode": None}
    try:
        w = parse_vector(vector, lay["present"], lay["full_layout"] or None,
                         source="in this file" if lora else f"of the {lay['architecture_title']} layout")
    except ChopShopError as e:
        return {"ok": False, "error": str(e), "weights": {}, "mode": None}
    return {"ok": True, "error": None, "weights": w.weights, "mode": w.mode, "warnings": w.warnings}


def strict_dumps(obj) -> str:
    """Strict JSON: a NaN or Infinity is a bug here, never sent as bare ``NaN`` (a ValueError instead)."""
    return json.dumps(obj, allow_nan=False)


def _handler(fn):
    async def handle(request):
        from aiohttp import web
        q = request.rel_url.query
        try:
            return web.json_response(fn(q), dumps=strict_dumps)
        except HttpError as e:
            return web.json_response({"error": str(e)}, status=e.status)
        except ChopShopError as e:
            return web.json_response({"error": str(e)}, status=400)
        except Exception as e:   # never take the server down; report and answer
            logging.exception("LoRA Chop Shop route %s failed", request.path)
            return web.json_response({"error": f"internal error: {e}"}, status=500)
    return handle


def _layout(q):
    if "lora" in q and (q["lora"].strip() or not q.get("architecture")):
        return layout_for_lora(q["lora"])     # a blank name is a bad request (400), not a missing file
    if q.get("architecture"):
        return layout_for_architecture(q["architecture"])
    raise HttpError(400, "give ?lora=<name from the loras list> or ?architecture=<id>")


ROUTES = {
    "/chopshop/layout": _layout,
    "/chopshop/architectures": lambda q: architectures(),
    "/chopshop/presets": lambda q: presets(q.get("architecture")),
    "/chopshop/validate": lambda q: validate(q.get("vector", ""), q.get("lora"), q.get("architecture")),
}


def register_routes() -> bool:
    """Add the GET routes to PromptServer.instance (once); False when there is no server (e.g. tests
    that import the nodes without one)."""
    global _REGISTERED
    if _REGISTERED:
        return True
    try:
        from server import PromptServer
    except ImportError:
        return False
    inst = getattr(PromptServer, "instance", None)
    if inst is None or not hasattr(inst, "routes"):
        return False
    for path, fn in ROUTES.items():
        inst.routes.get(path)(_handler(fn))
    _REGISTERED = True
    return True
