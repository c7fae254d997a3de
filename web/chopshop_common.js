// LoRA Chop Shop: shared front-end helpers (no extension is registered here).
// Plain ES module, no build step. Used by chopshop_blockgrid.js and chopshop_inspector.js.
//
// Rules kept throughout (Nodes 2.0 safe): widgets and slots are found BY NAME, never by index;
// node.widgets / node.inputs / node.outputs may be undefined; only DOM widgets, no canvas drawing.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

export const NODE = {
  load: "ChopShopLoadLoRA",
  inspector: "ChopShopBlockLayoutInspector",
  picker: "ChopShopPresetPicker",
  chop: "ChopShopBlockChop",
  resize: "ChopShopSVDResize",
  apply: "ChopShopApplyLoRA",
  save: "ChopShopSaveLoRA",
};

export const nodeClass = (node) => node?.comfyClass ?? node?.type ?? "";
export const isChopShopNode = (node) => nodeClass(node).startsWith("ChopShop");

export function findWidget(node, name) {
  const ws = node?.widgets;
  return Array.isArray(ws) ? ws.find((w) => w && w.name === name) ?? null : null;
}

export function findInputSlot(node, name) {
  const ins = node?.inputs;
  if (!Array.isArray(ins)) return -1;
  return ins.findIndex((i) => i && i.name === name);
}

export function findOutputSlot(node, name) {
  const outs = node?.outputs;
  if (!Array.isArray(outs)) return -1;
  return outs.findIndex((o) => o && o.name === name);
}

export function getLink(graph, id) {
  if (!graph || id == null) return null;
  if (typeof graph.getLink === "function") {
    const l = graph.getLink(id);
    if (l) return l;
  }
  const links = graph.links;
  if (!links) return null;
  return typeof links.get === "function" ? links.get(id) ?? null : links[id] ?? null;
}

export function getNodeById(graph, id) {
  if (!graph || id == null) return null;
  return graph.getNodeById?.(id) ?? null;
}

/** The node (and its output slot) feeding input `name` of `node`, looking through legacy Reroute nodes. */
export function upstreamOf(node, name) {
  let slot = findInputSlot(node, name);
  let cur = node;
  for (let hops = 0; hops < 32; hops++) {
    if (slot < 0) return null;
    const linkId = cur.inputs?.[slot]?.link;
    if (linkId == null) return null;
    const graph = cur.graph;
    const link = getLink(graph, linkId);
    if (!link) return null;
    const origin = getNodeById(graph, link.origin_id);
    if (!origin) return null;
    if (nodeClass(origin) === "Reroute") {   // frontend's virtual reroute node: follow its single input
      cur = origin;
      slot = 0;
      continue;
    }
    return { node: origin, slot: link.origin_slot, outputName: origin.outputs?.[link.origin_slot]?.name ?? null };
  }
  return null;
}

/** Nodes fed by output `name` of `node`: [{node, inputName, slot}] (through legacy Reroute nodes). */
export function downstreamOf(node, name) {
  const out = [];
  const slot = findOutputSlot(node, name);
  if (slot < 0) return out;
  const seen = new Set();
  const walk = (n, s, depth) => {
    const ids = n.outputs?.[s]?.links;
    if (!Array.isArray(ids) || depth > 32) return;
    for (const id of ids) {
      const link = getLink(n.graph, id);
      if (!link || seen.has(id)) continue;
      seen.add(id);
      const target = getNodeById(n.graph, link.target_id);
      if (!target) continue;
      if (nodeClass(target) === "Reroute") walk(target, 0, depth + 1);
      else out.push({ node: target, slot: link.target_slot, inputName: target.inputs?.[link.target_slot]?.name });
    }
  };
  walk(node, slot, 0);
  return out;
}

/** The `lora_name` of the ChopShopLoadLoRA node upstream of `node`'s `lora` input, walking through other
 * Chop Shop nodes (SVD Resize, Block Chop, ...) by their `lora` input. Returns
 * {state: "none"} (nothing connected), {state: "lora", lora}, or {state: "unknown", via} (a foreign node). */
export function findUpstreamLora(node) {
  let cur = node;
  const seen = new Set();
  for (let hops = 0; hops < 32; hops++) {
    const up = upstreamOf(cur, "lora");
    if (!up) return hops === 0 ? { state: "none" } : { state: "unknown", via: nodeClass(cur) };
    const n = up.node;
    if (seen.has(n.id)) return { state: "unknown", via: "cycle" };
    seen.add(n.id);
    if (nodeClass(n) === NODE.load) {
      const w = findWidget(n, "lora_name");
      const v = w?.value;
      return v ? { state: "lora", lora: String(v) } : { state: "unknown", via: NODE.load };
    }
    if (isChopShopNode(n) && findInputSlot(n, "lora") >= 0) {
      cur = n;
      continue;
    }
    return { state: "unknown", via: nodeClass(n) || "?" };
  }
  return { state: "unknown", via: "too deep" };
}

// ------------------------------------------------------------------ HTTP (read-only routes)

const cache = new Map();   // key -> {t, promise}

async function getJSON(path) {
  const res = await api.fetchApi(path, { cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  if (!res.ok) {
    const msg = (body && (body.error || body.message)) || `${res.status} ${res.statusText}`;
    throw new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
  }
  return body;
}

/** GET with a short-lived cache (ttl ms); failures are not cached. */
export function cachedJSON(path, ttl = 30000) {
  const hit = cache.get(path);
  const now = Date.now();
  if (hit && now - hit.t < ttl) return hit.promise;
  const promise = getJSON(path);
  cache.set(path, { t: now, promise });
  promise.catch(() => cache.delete(path));
  return promise;
}

export const fetchArchitectures = () => cachedJSON("/chopshop/architectures", 300000);
export const fetchPresets = () => cachedJSON("/chopshop/presets", 15000);
export const fetchLayoutForLora = (lora) => cachedJSON(`/chopshop/layout?lora=${encodeURIComponent(lora)}`, 15000);
export const fetchLayoutForArch = (arch) =>
  cachedJSON(`/chopshop/layout?architecture=${encodeURIComponent(arch)}`, 300000);

/** The backend's verdict on a vector: {ok, error, weights, mode}. Not cached. */
export async function validateVector(vector, { lora, architecture }) {
  const q = new URLSearchParams({ vector: vector ?? "" });
  if (lora) q.set("lora", lora);
  else if (architecture) q.set("architecture", architecture);
  const res = await api.fetchApi(`/chopshop/validate?${q.toString()}`, { cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  if (body && typeof body === "object" && ("ok" in body || "error" in body)) {
    return { ok: !!body.ok && !body.error, error: body.error ?? null, weights: body.weights, mode: body.mode };
  }
  return { ok: false, error: `validation route answered ${res.status}`, transport: true };
}

export function findPreset(presets, name) {
  if (!Array.isArray(presets) || name == null) return null;
  const key = String(name);
  return presets.find((p) => p.name === key)
    ?? presets.find((p) => String(p.name).toLowerCase() === key.trim().toLowerCase())
    ?? null;
}

/** label -> weight map of a preset row {vector:[global, ...], labels:[...]} (labels with or without "global"). */
export function presetWeights(preset) {
  const v = (preset?.vector ?? []).map(Number);
  let labels = preset?.labels ?? [];
  let global = 1;
  const map = new Map();
  if (labels.length === v.length - 1) {
    global = v[0];
    labels.forEach((lab, i) => map.set(lab, v[i + 1]));
  } else if (labels.length === v.length) {
    labels.forEach((lab, i) => {
      if (String(lab).toLowerCase() === "global") global = v[i];
      else map.set(lab, v[i]);
    });
  }
  return { global, map };
}

// ------------------------------------------------------------------ vector strings (mirror of core/vector.py)

const NUMBER = /^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Parse "global,w1,..." locally for instant redraw; {values} or {error}. The backend stays the judge. */
export function parseNumbers(text) {
  if (text == null || !String(text).trim()) return { error: "empty block vector" };
  let body = String(text).trim();
  if (body.includes(":")) body = body.slice(body.indexOf(":") + 1);
  const items = body.split(",").map((s) => s.trim());
  if (items.length && items[items.length - 1] === "") items.pop();
  const values = [];
  for (let i = 0; i < items.length; i++) {
    const it = items[i];
    if (!NUMBER.test(it)) return { error: `position ${i + 1} is '${it}'` };
    const v = Number(it);
    if (!Number.isFinite(v)) return { error: `position ${i + 1} is not finite` };
    values.push(v);
  }
  if (!values.length) return { error: "empty block vector" };
  return { values };
}

export function fmtNumber(v) {
  const n = Number(v);
  if (!Number.isFinite(n)) return "?";
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toPrecision(6)));
}

export const formatVector = (global, weights) => [global, ...weights].map(fmtNumber).join(",");

/** Section of a block label: "INP", "MID", "OUT", "D", "S", "B" (or the letters of an unknown one). */
export function sectionOf(label) {
  const m = /^([A-Z]+)\d+$/.exec(String(label));
  return m ? m[1] : "?";
}

export const SECTION_TITLE = { INP: "in", MID: "mid", OUT: "out", D: "double", S: "single", B: "blocks" };
const SECTION_ORDER = { INP: 0, MID: 1, OUT: 2, D: 0, S: 1, B: 0 };

export function sortLabels(labels) {
  const key = (l) => {
    const m = /^([A-Z]+)(\d+)$/.exec(String(l));
    return m ? [SECTION_ORDER[m[1]] ?? 9, Number(m[2])] : [99, 0];
  };
  return [...new Set(labels)].sort((a, b) => {
    const ka = key(a), kb = key(b);
    return ka[0] - kb[0] || ka[1] - kb[1];
  });
}

// ------------------------------------------------------------------ DOM helpers

export function h(tag, props = {}, children = []) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of [].concat(children)) if (c != null) el.append(c);
  return el;
}

/** Keep key strokes typed into our inputs away from the canvas shortcuts (Delete, Ctrl+Z, ...). */
export function isolateKeys(el) {
  for (const ev of ["keydown", "keyup", "keypress"]) el.addEventListener(ev, (e) => e.stopPropagation());
}

export function markDirty(node) {
  node?.setDirtyCanvas?.(true, true);
  node?.graph?.setDirtyCanvas?.(true, true);
}

/** Set a widget's value by name (no-op if unchanged); fires its callback like a user edit would. */
export function setWidgetValue(node, name, value) {
  const w = findWidget(node, name);
  if (!w || w.value === value) return false;
  w.value = value;
  try {
    w.callback?.(w.value, app?.canvas, node);
  } catch (e) {
    console.warn("[LoRAChopShop] widget callback failed", e);
  }
  markDirty(node);
  return true;
}

/** Grow a (classic canvas) node so its widgets fit (and, with shrink, drop spare height); Nodes 2.0
 * sizes its nodes itself. */
export function fitNode(node, minWidth = 0, extraHeight = 0, shrink = false) {
  if (!node?.computeSize || !node.size) return;
  const min = node.computeSize();
  const w = Math.max(node.size[0], min[0], minWidth);
  const hgt = shrink ? min[1] + extraHeight : Math.max(node.size[1], min[1] + extraHeight);
  if (w !== node.size[0] || hgt !== node.size[1]) node.setSize?.([w, hgt]);
  markDirty(node);
}

let styleDone = false;
export function injectStyle() {
  if (styleDone || document.getElementById("chopshop-style")) return;
  styleDone = true;
  const css = `
.chopshop-w{box-sizing:border-box;width:100%;height:100%;min-width:0;contain:inline-size;overflow:hidden;font:12px/1.3 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#e6e6e6;background:#1b1d21;border:1px solid #3a3f47;border-radius:6px;padding:5px 6px;display:flex;flex-direction:column;gap:4px}
.chopshop-w *{box-sizing:border-box}
.chopshop-w>*{flex:0 0 auto}
.chopshop-hint{color:#8f96a0;font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;flex:1 1 0;min-width:0;text-align:right}
.chopshop-bar{display:flex;align-items:center;gap:6px;flex-wrap:nowrap;height:22px;min-width:0}
.chopshop-bar label{color:#c8ccd2;font-size:11px;display:flex;align-items:center;gap:3px}
.chopshop-src{color:#9fc5ff;font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;flex:1 1 0;min-width:0}
.chopshop-w input[type=number],.chopshop-w select{height:20px;font:11px system-ui,"DejaVu Sans",sans-serif;color:#f0f0f0;background:#2a2e35;border:1px solid #4a505a;border-radius:4px;padding:0 3px}
.chopshop-w input[type=number]{width:52px}
.chopshop-btn{height:20px;font:11px system-ui,"DejaVu Sans",sans-serif;color:#e6e6e6;background:#2f343c;border:1px solid #4a505a;border-radius:4px;padding:0 6px;cursor:pointer}
.chopshop-btn:hover{background:#3a414b}
.chopshop-group{display:flex;align-items:flex-start;gap:5px}
.chopshop-gname{width:40px;flex:0 0 40px;color:#aeb4bd;font-size:11px;text-align:right;padding-top:8px;overflow:hidden;text-overflow:clip}
.chopshop-cells{display:grid;gap:3px;flex:1 1 auto;min-width:0;grid-template-columns:repeat(auto-fill,minmax(40px,1fr))}
.chopshop-cell{position:relative;height:32px;min-width:0;border-radius:4px;border:1px solid #4a505a;background:#2a2e35;color:#b9bec6;cursor:pointer;user-select:none;display:flex;flex-direction:column;align-items:center;justify-content:center;overflow:hidden;padding:0}
.chopshop-cell .cs-fill{position:absolute;left:0;bottom:0;width:100%;background:#2e7d4f;pointer-events:none}
.chopshop-cell .cs-lab,.chopshop-cell .cs-val{position:relative;font:600 11px/1.15 ui-monospace,"DejaVu Sans Mono",monospace;pointer-events:none}
.chopshop-cell .cs-val{font-weight:400}
.chopshop-cell.on{border-color:#5cc98a;color:#ffffff}
.chopshop-cell.on .cs-fill{background:#2e7d4f}
.chopshop-cell.frac{border-color:#d9b44a;color:#ffffff}
.chopshop-cell.frac .cs-fill{background:#6b5a1e}
.chopshop-cell.off{color:#9aa0a8}
.chopshop-cell.absent{cursor:default;border-style:dashed;background:transparent;color:#7d838c}
.chopshop-cell:not(.absent):hover{outline:2px solid #8ab4f8;outline-offset:-1px}
.chopshop-cell input{position:absolute;inset:2px;width:calc(100% - 4px);height:calc(100% - 4px);font:11px ui-monospace,"DejaVu Sans Mono",monospace;text-align:center;color:#fff;background:#111;border:1px solid #8ab4f8;border-radius:3px;padding:0}
.chopshop-stale .chopshop-cells{opacity:.45}
.chopshop-msg{font-size:11px;line-height:1.3;min-height:14px;color:#aeb4bd;word-break:break-word}
.chopshop-err{color:#ff8a80;font-weight:600}
.chopshop-note{color:#f0c674}
.chopshop-desc{color:#cfd6df;font-style:italic}
.chopshop-report .chopshop-scroll,.chopshop-layout .chopshop-scroll{flex:1 1 auto;min-height:0;overflow:auto}
.chopshop-line{font:11px/1.35 ui-monospace,"DejaVu Sans Mono",monospace;color:#e6e6e6;word-break:break-all}
.chopshop-line b{color:#9fc5ff;font-weight:600}
.chopshop-table{border-collapse:collapse;width:100%;font:11px/1.25 ui-monospace,"DejaVu Sans Mono",monospace;color:#e6e6e6}
.chopshop-table th{position:sticky;top:0;background:#262a31;color:#c8ccd2;text-align:left;font-weight:600;padding:2px 4px;border-bottom:1px solid #4a505a}
.chopshop-table td{padding:1px 4px;border-bottom:1px solid #2c3037;white-space:nowrap}
.chopshop-table td.num{text-align:right}
.chopshop-table .cs-bar{position:relative;height:13px;min-width:90px;background:#2a2e35;border-radius:2px}
.chopshop-table .cs-bar span{position:absolute;left:0;top:0;bottom:0;background:#3b82c4;border-radius:2px}
.chopshop-table .cs-bar em{position:relative;font-style:normal;padding-left:3px;color:#fff}
.chopshop-scroll{overflow:auto;flex:1 1 auto;min-height:0}
`;
  document.head.append(h("style", { id: "chopshop-style", text: css }));
}
