"""The example workflows (example_workflows/*.json, ComfyUI's UI format) for tests, the demo and the bench.

The shipped workflows name real models (``sd_xl_base_1.0.safetensors`` at 1024x1024, 25 steps, ...). Tests
and ``make demo`` run them with the tiny random-weight models instead, swapped in at run time:

    info = server.get("/object_info")
    ui = load("chop_compare")                           # the graph as the frontend loads it
    small = substitute(ui, info, TINY_SDXL_FILES)       # tiny files, 64x64 latents, 2 steps, cfg 1
    prompt = to_api(small, info)                        # API format for POST /prompt
    problems = check_graph(ui, info)                    # node types, inputs, links, widget values
    problems = rule_problems(ui)                        # the shipping rules (no tiny files, clip wired, steps)

``api_to_ui`` builds a UI graph from an API prompt plus a layout (scripts/build_example_workflows.py).
Widgets are matched to ``widgets_values`` by ComfyUI's ``input_order`` (required, then optional), with the
extra "control after generate" value that the frontend keeps after a seed widget.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_workflows"
CONTROL = "control_after_generate"     # the frontend's extra widget after a seed
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
LATENT_NODES = {"EmptyLatentImage", "EmptySD3LatentImage"}
SAMPLER_NODES = {"KSampler", "KSamplerAdvanced"}
# nodes that sample, with seed, control and steps as their first widgets
RENDERING_NODES = {"KSampler", "ChopShopBlockSweep"}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".gguf")

# the real model files the example workflows name -> the tiny fixtures that stand in for them
TINY_SDXL_FILES = {"sd_xl_base_1.0.safetensors": "tiny_sdxl.safetensors",
                   "your_sdxl_lora.safetensors": "tiny_sdxl_locon.safetensors"}
TINY_FLUX_FILES = {"your_flux_lora.safetensors": "tiny_flux_lora.safetensors"}


def load(name: str) -> dict:
    """example_workflows/<name>.json."""
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def names() -> list[str]:
    """The example workflows shipped (one template entry each)."""
    return sorted(p.stem for p in EXAMPLES.glob("*.json"))


# ------------------------------------------------------------------------------------------- specs
def input_specs(info: dict) -> dict[str, list]:
    """name -> spec ([type_or_options, {opts}]) of a node's required and optional inputs, in input order."""
    inp = info.get("input", {})
    specs = {**inp.get("required", {}), **inp.get("optional", {})}
    order = info.get("input_order", {})
    names_ = list(order.get("required", [])) + list(order.get("optional", [])) or list(specs)
    return {n: specs[n] for n in names_ if n in specs}


def spec_type(spec) -> str:
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def spec_opts(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else list(spec_opts(spec).get("options", []))


def is_widget(spec) -> bool:
    t = spec_type(spec)
    return t == "COMBO" or (t in ("INT", "FLOAT", "STRING", "BOOLEAN") and not spec_opts(spec).get("forceInput"))


def widget_names(info: dict) -> list[str]:
    """The names of ``widgets_values`` entries, in order (CONTROL after a seed-like widget)."""
    out = []
    for name, spec in input_specs(info).items():
        if is_widget(spec):
            out.append(name)
            if spec_opts(spec).get(CONTROL):
                out.append(CONTROL)
    return out


def default_of(spec):
    opts = spec_opts(spec)
    if "default" in opts:
        return opts["default"]
    if spec_type(spec) == "COMBO":
        options = combo_options(spec)
        return options[0] if options else ""
    return {"STRING": "", "BOOLEAN": False}.get(spec_type(spec), 0)


def widget_values(node: dict, info: dict) -> dict:
    """name -> value of a UI node's widgets (list or dict form of ``widgets_values``)."""
    vals = node.get("widgets_values") or []
    if isinstance(vals, dict):
        return dict(vals)
    return {n: v for n, v in zip(widget_names(info), vals) if n != CONTROL}


def link_rows(ui: dict) -> dict[int, tuple[int, int, int, int, str]]:
    """link id -> (origin id, origin slot, target id, target slot, type); list or dict link form."""
    rows = {}
    for lk in ui.get("links", []):
        if isinstance(lk, dict):
            rows[lk["id"]] = (lk["origin_id"], lk["origin_slot"], lk["target_id"], lk["target_slot"], lk["type"])
        else:
            rows[lk[0]] = tuple(lk[1:6])
    return rows


# ------------------------------------------------------------------------------------------- UI -> API
def to_api(ui: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI graph: active nodes (mode 0) only, frontend-only nodes skipped."""
    links = link_rows(ui)
    prompt = {}
    for n in ui["nodes"]:
        if n.get("mode", 0) != 0 or n["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(n["type"])
        if info is None:
            raise ValueError(f"node {n['id']}: type {n['type']!r} is not in /object_info")
        inputs = widget_values(n, info)
        for inp in n.get("inputs") or []:
            if inp.get("link") is not None:
                origin, slot = links[inp["link"]][:2]
                inputs[inp["name"]] = [str(origin), slot]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs,
                                "_meta": {"title": n.get("title") or info.get("display_name", n["type"])}}
    return prompt


def ancestors(prompt: dict, ids) -> dict:
    """The part of an API prompt that the nodes ``ids`` need (they and everything upstream)."""
    keep, todo = set(), [str(i) for i in ids]
    while todo:
        nid = todo.pop()
        if nid in keep:
            continue
        keep.add(nid)
        todo += [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return {k: v for k, v in prompt.items() if k in keep}


def strip_meta(prompt: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in prompt.items()}


# ------------------------------------------------------------------------------------------- tiny run
def substitute(ui: dict, object_info: dict, files: dict[str, str], size: int = 64, steps: int = 2,
               cfg: float | None = 1.0, widgets: dict | None = None) -> dict:
    """A copy of a UI graph for the tiny models: file names swapped by ``files``, latents ``size`` px
    square, KSamplers and sweeps at ``steps`` steps, KSamplers at ``cfg`` (None keeps it); ``widgets``
    (name -> value) sets that widget on every node that has one. The input is not modified."""
    out = copy.deepcopy(ui)
    widgets = widgets or {}
    for n in out["nodes"]:
        info = object_info.get(n["type"])
        vals = n.get("widgets_values")
        if info is None or not isinstance(vals, list):
            continue
        for i, name in enumerate(widget_names(info)[:len(vals)]):
            v = vals[i]
            if name in widgets:
                vals[i] = widgets[name]
            elif isinstance(v, str) and v in files:
                vals[i] = files[v]
            elif n["type"] in LATENT_NODES and name in ("width", "height"):
                vals[i] = size
            elif n["type"] in RENDERING_NODES | SAMPLER_NODES and name == "steps":
                vals[i] = steps
            elif n["type"] in SAMPLER_NODES and name == "cfg" and cfg is not None:
                vals[i] = cfg
    return out


def locale_entry(info: dict) -> dict:
    """The locales/en/nodeDefs.json entry of a node, from its /object_info entry."""
    specs = input_specs(info)
    order = info["input_order"]["required"] + info["input_order"].get("optional", [])
    return {"display_name": info["display_name"], "description": info["description"],
            "inputs": {n: {"name": n, "tooltip": specs[n][1]["tooltip"]} for n in order},
            "outputs": {str(i): {"name": n, "tooltip": t}
                        for i, (n, t) in enumerate(zip(info["output_name"], info["output_tooltips"]))}}


# ------------------------------------------------------------------------------------------- checks
def rule_problems(ui: dict) -> list[str]:
    """What breaks the shipping rules: a widget value naming a ``tiny*`` file, an Apply LoRA without
    ``clip`` wired, a KSampler or Block Impact Sweep under 20 steps (widgets: seed, control, steps, ...)."""
    bad = []
    for n in ui["nodes"]:
        vals = n.get("widgets_values") or []
        vals = list(vals.values()) if isinstance(vals, dict) else vals
        for v in vals:
            if isinstance(v, str) and Path(v.replace("\\", "/")).name.lower().startswith("tiny"):
                bad.append(f"node {n['id']} ({n['type']}) names {v!r}")
        if n["type"] == "ChopShopApplyLoRA":
            clip = [i for i in n.get("inputs") or [] if i["name"] == "clip"]
            if not clip or clip[0].get("link") is None:
                bad.append(f"node {n['id']} (Apply LoRA) has no clip connected")
        if n["type"] in RENDERING_NODES and not (len(vals) > 2 and vals[2] >= 20):
            bad.append(f"node {n['id']} ({n['type']}) runs {vals[2] if len(vals) > 2 else '?'} steps; want >= 20")
    return bad


def _types_match(out_type: str, in_type: str) -> bool:
    if "*" in (out_type, in_type):
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


def _value_problem(spec, value) -> str | None:
    t, opts = spec_type(spec), spec_opts(spec)
    if t == "COMBO":
        options = combo_options(spec)
        return None if value in options else f"{value!r} is not one of {options[:8]}"
    if t in ("INT", "FLOAT"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{value!r} is not a number"
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return f"{value} is outside [{opts.get('min')}, {opts.get('max')}]"
    if t == "STRING" and not isinstance(value, str):
        return f"{value!r} is not a string"
    if t == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not a boolean"
    return None


def check_graph(ui: dict, object_info: dict, file_combos_may_be_missing: bool = True) -> list[str]:
    """Structural problems of a UI graph against a server's /object_info: unknown node types, unknown
    input names, links whose ends do not exist or whose types differ, required inputs neither linked nor
    given, widget values out of range or not among a combo's options. A combo value naming a model file
    (``.safetensors`` ...) that this server does not have is accepted when ``file_combos_may_be_missing``."""
    bad = []
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, (o, oslot, t, tslot, typ) in link_rows(ui).items():
        if o not in nodes or t not in nodes:
            bad.append(f"link {lid}: end node missing")
            continue
        outs = nodes[o].get("outputs") or []
        if oslot >= len(outs) or lid not in (outs[oslot].get("links") or []):
            bad.append(f"link {lid}: not listed on output {oslot} of node {o}")
        ins = nodes[t].get("inputs") or []
        if tslot >= len(ins) or ins[tslot].get("link") != lid:
            bad.append(f"link {lid}: not the link of input {tslot} of node {t}")
    links = link_rows(ui)
    for n in ui["nodes"]:
        if n["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(n["type"])
        if info is None:
            bad.append(f"node {n['id']}: unknown type {n['type']!r}")
            continue
        bad += [f"node {n['id']} ({n['type']}): {p}" for p in _node_problems(n, info, object_info, nodes, links,
                                                                           file_combos_may_be_missing)]
    return bad


def _node_problems(n, info, object_info, nodes, links, files_missing_ok) -> list[str]:
    bad, specs = [], input_specs(info)
    required = set(info.get("input", {}).get("required", {}))
    linked = {}
    for inp in n.get("inputs") or []:
        if inp["name"] not in specs:
            bad.append(f"input {inp['name']!r} is not an input of {n['type']}")
        elif inp.get("link") is not None:
            o, oslot = links[inp["link"]][:2]
            out_types = object_info.get(nodes[o]["type"], {}).get("output", [])
            ot = out_types[oslot] if oslot < len(out_types) else "?"
            want = spec_type(specs[inp["name"]])
            if not _types_match(ot, want):
                bad.append(f"input {inp['name']!r} wants {want}, linked to {ot}")
            linked[inp["name"]] = True
    values = widget_values(n, info)
    outs = [o.get("type") for o in n.get("outputs") or []]
    if outs and outs != list(info.get("output", [])):
        bad.append(f"outputs {outs} differ from {info.get('output')}")
    for name, spec in specs.items():
        if name in linked:
            continue
        if not is_widget(spec):
            if name in required:
                bad.append(f"required input {name!r} is not connected")
            continue
        if name not in values:
            if name in required:
                bad.append(f"widget {name!r} has no value")
            continue
        if spec_type(spec) == "COMBO" and files_missing_ok and str(values[name]).endswith(MODEL_SUFFIXES):
            continue
        p = _value_problem(spec, values[name])
        if p:
            bad.append(f"widget {name!r}: {p}")
    return bad


# ------------------------------------------------------------------------------------------- API -> UI
def api_to_ui(api: dict, object_info: dict, layout: dict[str, tuple[int, int, int, int]]) -> dict:
    """The UI graph of an API prompt; ``layout``: node id -> (x, y, width, height)."""
    nodes, links, out_links = [], [], {}
    for order, (nid, node) in enumerate(api.items()):
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in input_specs(info).items():
            val = node["inputs"].get(name)
            is_link = isinstance(val, list) and len(val) == 2 and isinstance(val[0], str)
            if is_widget(spec):
                widgets.append(default_of(spec) if is_link or name not in node["inputs"] else val)
                if spec_opts(spec).get(CONTROL):
                    widgets.append("fixed")
            if not is_link:
                if not is_widget(spec):
                    inputs.append({"name": name, "type": spec_type(spec), "link": None})
                continue
            lid = len(links) + 1
            links.append([lid, int(val[0]), val[1], int(nid), len(inputs), spec_type(spec)])
            out_links.setdefault((val[0], val[1]), []).append(lid)
            entry = {"name": name, "type": spec_type(spec), "link": lid}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            inputs.append(entry)
        x, y, w, h = layout[nid]
        names_ = info.get("output_name") or info["output"]
        nodes.append({"id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [w, h], "flags": {},
                      "order": order, "mode": 0, "inputs": inputs,
                      "outputs": [{"name": nm, "type": t, "links": [], "slot_index": i}
                                  for i, (nm, t) in enumerate(zip(names_, info["output"]))],
                      "title": node.get("_meta", {}).get("title", info["display_name"]),
                      "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
    by_id = {n["id"]: n for n in nodes}
    for (src, slot), ids in out_links.items():
        by_id[int(src)]["outputs"][slot]["links"] = ids
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [20, 20]}}, "version": 0.4}
