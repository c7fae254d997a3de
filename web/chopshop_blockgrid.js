// LoRA Chop Shop: the block grid on Block Chop and the live vector line on Preset Picker.
//
// * Block Chop gets a DOM widget: one toggle per block (INP01.. / D00.. / B00..) in model order, grouped
//   in/mid/out (double/single, or one group of B..), a global weight field, and a message line. Editing
//   the grid rewrites the `vector` widget; editing `vector` redraws the grid. A malformed vector shows the
//   backend's own error (GET /chopshop/validate, debounced) in red before anything is queued.
// * The layout comes from the LoRA upstream: the `lora` input is followed up to a ChopShopLoadLoRA node
//   (through other Chop Shop nodes such as SVD Resize and through reroutes) and its `lora_name` is sent to
//   GET /chopshop/layout. With no LoRA the grid shows an architecture's full layout (select in the grid,
//   default sdxl, list from GET /chopshop/architectures).
// * Preset Picker shows the chosen preset's vector on the node at once; a Block Chop whose `vector` input
//   is fed by a Preset Picker shows that preset on its grid (by label onto the grid's blocks).
//
// Classic canvas and Nodes 2.0 alike: DOM widgets only (no onDrawForeground), widgets found by name,
// node.widgets may be undefined. A light 400 ms tick catches changes no callback reports (workflow loads,
// links, values set by other code); user edits act at once.
import { app } from "../../scripts/app.js";
import {
  NODE, nodeClass, findWidget, findInputSlot, upstreamOf, downstreamOf, findUpstreamLora,
  fetchArchitectures, fetchPresets, fetchLayoutForLora, fetchLayoutForArch, validateVector,
  findPreset, presetWeights, parseNumbers, fmtNumber, formatVector, sectionOf, SECTION_TITLE, sortLabels,
  h, isolateKeys, markDirty, setWidgetValue, fitNode, injectStyle,
} from "./chopshop_common.js";

const GRID_WIDGET = "chopshop_block_grid";
const PRESET_LINE_WIDGET = "chopshop_preset_vector";
const DEFAULT_ARCH = "sdxl";
const MAX_COLS = 10;
const CELL_H = 32, CELL_GAP = 3, CELL_W = 43;
const VALIDATE_DEBOUNCE_MS = 300;
const TICK_MS = 400;
const WIDGET_MARGINS = 20;   // a DOM widget's element is its slot minus a 10 px margin above and below

const controllers = new Set();   // live BlockGrid / PresetLine instances (the tick walks these)

function chainCallback(obj, key, fn) {
  if (!obj) return;
  const prev = obj[key];
  obj[key] = function (...args) {
    const r = prev?.apply(this, args);
    try {
      fn.apply(this, args);
    } catch (e) {
      console.warn("[LoRAChopShop]", e);
    }
    return r;
  };
}

/** Where `node`'s LoRA comes from: {key, lora?, architecture?, note?}. */
function layoutSource(node, archChoice) {
  const up = findUpstreamLora(node);
  if (up.state === "lora") return { key: `lora:${up.lora}`, lora: up.lora };
  const note = up.state === "unknown"
    ? `LoRA comes from ${up.via}, whose file is not known before running; showing a full layout`
    : null;
  return { key: `arch:${archChoice}`, architecture: archChoice, note };
}

function normLayout(data, src) {
  const present = Array.isArray(data?.present) ? data.present.map(String) : [];
  const full = Array.isArray(data?.full_layout) ? data.full_layout.map(String) : [];
  const info = new Map();
  for (const b of data?.blocks ?? []) info.set(String(b.label), b);
  return {
    source: src.lora ? "lora" : "arch",
    lora: src.lora ?? null,
    architecture: data?.architecture ?? src.architecture ?? null,
    title: data?.architecture_title ?? data?.architecture ?? "",
    present,
    full,
    all: sortLabels([...full, ...present]),
    info,
  };
}

// ===================================================================== Block Chop grid

class BlockGrid {
  constructor(node) {
    this.node = node;
    this.layout = null;          // normLayout(...)
    this.layoutKey = null;
    this.loadingKey = null;
    this.loadSeq = 0;
    this.weights = new Map();    // label -> weight (every label of the layout)
    this.global = 1;
    this.form = "present";       // how the vector is written: over the blocks "present" or the "full" layout
    this.lastVector = null;      // the vector text the grid last showed / wrote
    this.localError = null;      // local parse verdict of the current text (null: it fits the grid)
    this.layoutError = null;
    this.validation = null;      // {ok, error, mode, weights} for lastVector
    this.valSeq = 0;
    this.valTimer = null;
    this.presetKey = null;       // the Preset Picker state last applied
    this.autoText = null;        // the vector the grid filled into an empty widget
    this.presetNote = null;
    this.sourceNote = null;
    this.writing = false;
    this.cells = new Map();      // label -> element
    this.build();
    controllers.add(this);
  }

  get archChoice() {
    return this.node.properties?.chopshop_architecture || DEFAULT_ARCH;
  }

  set archChoice(v) {
    if (!this.node.properties) this.node.properties = {};
    this.node.properties.chopshop_architecture = v;
  }

  // ------------------------------------------------------------------ DOM
  build() {
    injectStyle();
    this.srcEl = h("span", { class: "chopshop-src", text: "…" });
    this.archSel = h("select", { title: "Architecture whose full block layout is shown while no LoRA is connected",
                                 "data-role": "arch" });
    this.archSel.append(h("option", { value: this.archChoice, text: this.archChoice }));
    this.archSel.addEventListener("change", () => {
      this.archChoice = this.archSel.value;
      this.sync(true);
    });
    this.archLabel = h("label", { title: "Layout shown while no LoRA is connected" }, ["arch", this.archSel]);
    this.globalIn = h("input", { type: "number", step: "0.05", min: "0", value: "1", "data-role": "global",
                                 title: "Global weight: multiplies every block weight (first number of the vector)" });
    this.globalIn.addEventListener("change", () => {
      const v = Number(this.globalIn.value);
      if (!Number.isFinite(v) || v < 0) {
        this.globalIn.value = fmtNumber(this.global);
        return;
      }
      this.global = v;
      this.commit();
    });
    const btn = (text, title, fn) => h("button", { class: "chopshop-btn", type: "button", text, title,
                                                   "data-role": text.replace(/\s+/g, "-"), onclick: fn });
    // preset menu: each option's tooltip is the preset's description; the chosen one's shows below the grid
    this.presetSel = h("select", { "data-role": "preset-menu", style: "max-width:150px",
                                   title: "Apply a preset to the grid (its description shows below the grid)" });
    this.presetSel.append(h("option", { value: "", text: "preset…" }));
    this.presetSel.addEventListener("change", () => this.choosePreset(this.presetSel.value));
    this.presetRows = [];
    this.presetMenuKey = null;
    this.bar = h("div", { class: "chopshop-bar" }, [this.srcEl, this.archLabel, this.presetSel]);
    this.bar2 = h("div", { class: "chopshop-bar" }, [
      h("label", {}, ["global", this.globalIn]),
      btn("all", "Every block on (weight 1)", () => this.setAll(1)),
      btn("none", "Every block off (weight 0)", () => this.setAll(0)),
      btn("invert", "Swap on and off blocks", () => this.invert()),
      h("span", { class: "chopshop-hint", text: "click on/off · right-click: weight · wheel ±0.1" }),
    ]);
    this.groupsEl = h("div", { style: "display:flex;flex-direction:column;gap:4px" });
    this.msgEl = h("div", { class: "chopshop-msg", "data-role": "message" });
    this.noteEl = h("div", { class: "chopshop-msg chopshop-note", "data-role": "note" });
    this.runEl = h("div", { class: "chopshop-msg", "data-role": "last-run", style: "display:none" });
    this.descEl = h("div", { class: "chopshop-msg chopshop-desc", "data-role": "preset-description",
                             style: "display:none" });
    this.root = h("div", { class: "chopshop-w chopshop-grid", "data-node-id": String(this.node.id ?? "") },
                  [this.bar, this.bar2, this.groupsEl, this.msgEl, this.noteEl, this.descEl, this.runEl]);
    isolateKeys(this.root);
    this.root.addEventListener("contextmenu", (e) => { e.preventDefault(); e.stopPropagation(); });

    this.widget = this.node.addDOMWidget(GRID_WIDGET, "chopshop_grid", this.root, {
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => this.minHeight(),
      hideOnZoom: false,
      serialize: false,           // not part of the prompt
    });
    this.widget.serialize = false; // nor of widgets_values (the `vector` widget is the source of truth)
    this.fillArchitectures();
  }

  async fillArchitectures() {
    try {
      const list = await fetchArchitectures();
      const cur = this.archChoice;
      this.archSel.replaceChildren(...list.map((a) => h("option", { value: a.id, text: a.title || a.id })));
      if (!list.some((a) => a.id === cur)) this.archChoice = list[0]?.id ?? DEFAULT_ARCH;
      this.archSel.value = this.archChoice;
    } catch (e) {
      this.layoutError = `architectures: ${e.message}`;
      this.renderMessages();
    }
  }

  groups() {
    const labels = this.layout?.all ?? [];
    const out = [];
    for (const lab of labels) {
      const sec = sectionOf(lab);
      const g = out[out.length - 1];
      if (g && g.sec === sec) g.labels.push(lab);
      else out.push({ sec, labels: [lab] });
    }
    return out;
  }

  cols() {
    const groups = this.groups();
    return Math.max(1, Math.min(MAX_COLS, Math.max(0, ...groups.map((g) => g.labels.length))));
  }

  minHeight() {
    // measured when the element is laid out (its parts have intrinsic heights), else estimated
    const parts = [this.bar, this.bar2, this.groupsEl, this.msgEl, this.noteEl, this.descEl, this.runEl];
    if (this.measurable()) {
      const shown = parts.filter((p) => p.style.display !== "none");
      const sum = shown.reduce((a, p) => a + p.offsetHeight, 0);
      return Math.ceil(sum + 4 * (shown.length - 1) + 12 + 2 + WIDGET_MARGINS);
    }
    let hgt = 12 + 2 * 24 + 3 * 4;
    const avail = (this.node.size?.[0] ?? this.minWidth()) - 20 - 14 - 45;
    const cols = Math.max(1, Math.floor((avail + CELL_GAP) / (40 + CELL_GAP)));
    for (const g of this.groups()) {
      const rows = Math.ceil(g.labels.length / cols);
      hgt += rows * CELL_H + (rows - 1) * CELL_GAP + 4;
    }
    hgt += 15 * Math.max(1, Math.ceil((this.msgEl?.textContent?.length ?? 0) / 70)) + 4;
    if (this.noteEl?.textContent) hgt += 15 * Math.ceil(this.noteEl.textContent.length / 70) + 4;
    return Math.max(90, hgt) + WIDGET_MARGINS;
  }

  minWidth() {
    // widget margins 2x10, padding+border 14, group name 34 + gap 5, cells and gaps, a little slack
    const cols = this.cols();
    return 20 + 14 + 45 + cols * 40 + (cols - 1) * CELL_GAP + 8;
  }

  renderCells() {
    this.cells.clear();
    const present = new Set(this.layout?.source === "lora" ? this.layout.present : this.layout?.all ?? []);
    const kids = this.groups().map((g) => {
      const cells = h("div", { class: "chopshop-cells" });   // auto-fill columns: wraps in narrow nodes
      for (const lab of g.labels) {
        const isPresent = present.has(lab);
        const cell = h("div", { class: `chopshop-cell${isPresent ? "" : " absent"}`,
                                dataset: { label: lab, present: isPresent ? "1" : "0" } },
                       [h("span", { class: "cs-fill" }), h("span", { class: "cs-lab", text: lab }),
                        h("span", { class: "cs-val", text: "" })]);
        if (isPresent) {
          cell.addEventListener("click", (e) => {
            if (e.target.tagName === "INPUT") return;
            e.stopPropagation();
            this.toggle(lab);
          });
          cell.addEventListener("contextmenu", (e) => {
            e.preventDefault();
            e.stopPropagation();
            this.editCell(lab, cell);
          });
          cell.addEventListener("dblclick", (e) => { e.preventDefault(); e.stopPropagation(); });
          cell.addEventListener("wheel", (e) => {
            e.preventDefault();
            e.stopPropagation();
            const step = e.shiftKey ? 0.01 : 0.1;
            const cur = this.weights.get(lab) ?? 1;
            this.setWeight(lab, Math.max(0, Math.round((cur + (e.deltaY < 0 ? step : -step)) * 100) / 100));
          }, { passive: false });
        }
        this.cells.set(lab, cell);
        cells.append(cell);
      }
      return h("div", { class: "chopshop-group", dataset: { section: g.sec } },
               [h("div", { class: "chopshop-gname", text: SECTION_TITLE[g.sec] ?? g.sec }), cells]);
    });
    this.groupsEl.replaceChildren(...kids);
  }

  renderValues() {
    const lay = this.layout;
    if (!lay) return;
    const present = new Set(lay.source === "lora" ? lay.present : lay.all);
    for (const [lab, cell] of this.cells) {
      const w = this.weights.get(lab) ?? 1;
      const isPresent = present.has(lab);
      const eff = w * this.global;
      const state = !isPresent ? "absent" : w === 0 ? "off" : w === 1 ? "on" : "frac";
      cell.classList.remove("on", "off", "frac");
      if (isPresent) cell.classList.add(state);
      cell.dataset.weight = fmtNumber(w);
      cell.dataset.state = state;
      const val = cell.querySelector(".cs-val");
      if (val) val.textContent = isPresent ? fmtNumber(w) : "–";
      const fill = cell.querySelector(".cs-fill");
      if (fill) fill.style.height = isPresent ? `${Math.max(0, Math.min(1, w)) * 100}%` : "0%";
      const b = lay.info.get(lab);
      const counts = b && b.modules != null ? ` · ${b.modules} modules, ${b.tensors} tensors` : "";
      cell.title = isPresent
        ? `${lab}${b?.name ? ` (${b.name})` : ""}${counts}\nweight ${fmtNumber(w)} × global ${fmtNumber(this.global)} = ${fmtNumber(eff)}\nclick: on/off · right-click: type a weight · wheel: ±0.1 (shift ±0.01)`
        : `${lab}: not in this LoRA file (no tensors to keep or drop)`;
    }
    if (document.activeElement !== this.globalIn) this.globalIn.value = fmtNumber(this.global);
    this.root.classList.toggle("chopshop-stale", !!this.localError);
  }

  /** Fill the preset menu with the presets of the shown layout's architecture (once per architecture). */
  async fillPresetMenu() {
    const arch = this.layout?.architecture ?? null;
    if (!arch || arch === this.presetMenuKey) return;
    this.presetMenuKey = arch;
    let rows = [];
    try {
      rows = (await fetchPresets()).filter((p) => p.layout === arch);
    } catch (e) {
      rows = [];
    }
    if (this.presetMenuKey !== arch) return;
    this.presetRows = rows;
    this.presetSel.replaceChildren(
      h("option", { value: "", text: rows.length ? "preset…" : "no presets" }),
      ...rows.map((p) => h("option", { value: p.name, text: p.name, title: p.description || p.name })));
  }

  /** A preset chosen from the grid's own menu: its weights by label, as a grid edit (detaches a Picker). */
  choosePreset(name) {
    const p = findPreset(this.presetRows, name);
    const lay = this.layout;
    if (!p || !lay) return;
    const { global, map } = presetWeights(p);
    this.global = global;
    for (const lab of lay.all) this.weights.set(lab, map.has(lab) ? map.get(lab) : 1);
    this.showDescription(p);
    this.commit(true);
    this.resize();
  }

  showDescription(p) {
    const text = p?.description ? `${p.name}: ${p.description}` : "";
    this.descEl.textContent = text;
    this.descEl.title = p?.source ? `source: ${p.source}` : "";
    this.descEl.style.display = text ? "" : "none";
  }

  renderSource() {
    this.fillPresetMenu();
    const lay = this.layout;
    const fromLora = lay?.source === "lora";
    this.archLabel.style.display = fromLora ? "none" : "";
    if (!lay) {
      this.srcEl.textContent = this.layoutError ? "layout unavailable" : "loading layout…";
      return;
    }
    if (fromLora) {
      this.srcEl.textContent = `${lay.lora} · ${lay.title} · ${lay.present.length}/${lay.full.length || lay.present.length} blocks`;
      this.srcEl.title = `Blocks of ${lay.lora} (${lay.architecture}); dashed cells are blocks of the full layout that this file does not train`;
    } else {
      this.srcEl.textContent = `no LoRA file yet · full layout (${lay.all.length})`;
      this.srcEl.title = "Connect a Load LoRA File node (directly or through other Chop Shop nodes) to see its own blocks";
    }
  }

  renderMessages() {
    let text = "", cls = "chopshop-msg";
    const v = this.validation;
    if (this.layoutError) {
      text = `⚠ ${this.layoutError}`;
      cls += " chopshop-err";
    } else if (v && !v.ok && v.error) {
      text = `⚠ ${v.error}`;
      cls += " chopshop-err";
    } else if (v && v.ok) {
      const ws = Object.values(v.weights ?? {}).map(Number);
      const kept = ws.filter((x) => x > 0).length;
      const mode = v.mode === "by_label" ? "full layout, by label" : "by position";
      text = `✓ ${mode}: ${kept} of ${ws.length} blocks kept` +
        (ws.some((x) => x > 0 && x !== 1) ? " (some scaled)" : "");
    } else if (this.layout) {
      text = "checking…";
    }
    this.msgEl.className = cls;
    this.msgEl.textContent = text;
    this.msgEl.dataset.state = cls.includes("err") ? "error" : v?.ok ? "ok" : "pending";
    const notes = [this.sourceNote, this.presetNote].filter(Boolean);
    this.noteEl.textContent = notes.join(" · ");
    this.noteEl.style.display = notes.length ? "" : "none";
    this.resize();
  }

  renderAll() {
    this.renderSource();
    this.renderValues();
    this.renderMessages();
    this.resize();
  }

  measurable() {
    return this.root.isConnected && this.groupsEl.offsetHeight > 0;
  }

  /** Fit the (classic canvas) node to the grid. Heights are measured from the DOM, which follows a width
   * change one frame later, so a width change is followed by another (shrinking) fit. */
  resize(shrink = false) {
    this.shrinkNext ||= shrink;
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame(() => {
      if (this.measurable() && !this.measuredOnce) {   // earlier fits used the (generous) estimate
        this.measuredOnce = true;
        this.shrinkNext = true;
      }
      const now = `${this.minWidth()}x${this.minHeight()}`;
      if (this.lastMinSize === now && !this.shrinkNext) return;
      this.lastMinSize = now;
      const w0 = this.node.size?.[0];
      fitNode(this.node, this.minWidth(), 0, this.shrinkNext);   // a new layout may need less height
      this.shrinkNext = false;
      if (this.node.size?.[0] !== w0 && (this.refits = (this.refits ?? 0) + 1) <= 3) {
        setTimeout(() => this.resize(true), 60);
      } else {
        this.refits = 0;
      }
    });
  }

  // ------------------------------------------------------------------ model
  labelsForForm() {
    const lay = this.layout;
    if (!lay) return [];
    if (lay.source === "lora" && this.form !== "full") return lay.present;
    return lay.full.length ? lay.full : lay.present;
  }

  vectorText() {
    return formatVector(this.global, this.labelsForForm().map((l) => this.weights.get(l) ?? 1));
  }

  /** Read a vector string into the grid (no write-back). */
  readVector(text) {
    this.lastVector = text;
    const lay = this.layout;
    if (!lay) return;
    const r = parseNumbers(text);
    if (r.error) {
      this.localError = r.error;
    } else {
      const n = r.values.length - 1;
      const present = lay.source === "lora" ? lay.present : lay.all;
      let labels = null;
      if (n === present.length) {
        labels = present;
        this.form = "present";
      } else if (lay.full.length && n === lay.full.length) {
        labels = lay.full;
        this.form = "full";
      }
      if (labels) {
        this.localError = null;
        this.global = r.values[0];
        labels.forEach((lab, i) => this.weights.set(lab, r.values[i + 1]));
      } else {
        this.localError = `length ${r.values.length}`;
      }
    }
    this.validation = null;
    this.scheduleValidate();
    this.renderValues();
    this.renderMessages();
    this.resize();
  }

  /** The grid changed: write the vector widget (detaching a Preset Picker that fed it). */
  commit(keepPreset = false) {
    this.detachPreset();
    if (!keepPreset) {         // a hand edit: the grid no longer shows a preset
      this.presetSel.value = "";
      this.showDescription(null);
    }
    this.localError = null;
    const text = this.vectorText();
    this.writeVector(text);
    this.validation = null;
    this.scheduleValidate();
    this.renderValues();
    this.renderMessages();
  }

  writeVector(text) {
    this.lastVector = text;
    this.writing = true;
    try {
      setWidgetValue(this.node, "vector", text);
    } finally {
      this.writing = false;
    }
  }

  toggle(lab) {
    const cur = this.weights.get(lab) ?? 1;
    this.weights.set(lab, cur === 0 ? 1 : 0);
    this.commit();
  }

  setWeight(lab, w) {
    this.weights.set(lab, w);
    this.commit();
  }

  activeLabels() {
    const lay = this.layout;
    return lay ? (lay.source === "lora" ? lay.present : lay.all) : [];
  }

  setAll(w) {
    for (const lab of this.activeLabels()) this.weights.set(lab, w);
    this.commit();
  }

  invert() {
    for (const lab of this.activeLabels()) this.weights.set(lab, (this.weights.get(lab) ?? 1) === 0 ? 1 : 0);
    this.commit();
  }

  editCell(lab, cell) {
    if (cell.querySelector("input")) return;
    const input = h("input", { type: "text", value: fmtNumber(this.weights.get(lab) ?? 1),
                               "aria-label": `weight of ${lab}` });
    isolateKeys(input);
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      const v = Number(input.value.trim());
      input.remove();
      if (ok && input.value.trim() !== "" && Number.isFinite(v) && v >= 0) this.setWeight(lab, v);
      else this.renderValues();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    input.addEventListener("click", (e) => e.stopPropagation());
    cell.append(input);
    input.focus();
    input.select();
  }

  // ------------------------------------------------------------------ validation (backend is the judge)
  scheduleValidate() {
    clearTimeout(this.valTimer);
    this.valTimer = setTimeout(() => this.validate(), VALIDATE_DEBOUNCE_MS);
  }

  async validate() {
    const lay = this.layout;
    const text = this.lastVector ?? "";
    if (!lay) return;
    const seq = ++this.valSeq;
    let res;
    try {
      res = await validateVector(text, lay.source === "lora" ? { lora: lay.lora } : { architecture: lay.architecture });
    } catch (e) {
      res = { ok: false, error: `could not check the vector: ${e.message}` };
    }
    if (seq !== this.valSeq || text !== this.lastVector) return;   // outdated
    this.validation = res;
    this.renderMessages();
    this.resize();
  }

  // ------------------------------------------------------------------ presets
  presetSource() {
    const up = upstreamOf(this.node, "vector");
    if (!up) return null;
    if (nodeClass(up.node) === NODE.picker && (up.outputName === "vector" || up.outputName == null)) {
      return { picker: up.node, preset: findWidget(up.node, "preset")?.value ?? null };
    }
    return { other: nodeClass(up.node) || "another node" };
  }

  detachPreset() {
    const src = this.presetSource();
    if (!src?.picker) return;
    for (const name of ["vector", "preset_name"]) {
      const up = upstreamOf(this.node, name);
      if (up && up.node === src.picker) {
        const slot = findInputSlot(this.node, name);
        if (slot >= 0) this.node.disconnectInput(slot);
      }
    }
    this.presetKey = null;
    this.presetNote = `detached from Preset Picker "${src.preset}": the grid's vector is used now`;
    markDirty(this.node);
  }

  async applyPreset(src, key) {
    let presets;
    try {
      presets = await fetchPresets();
    } catch (e) {
      this.presetNote = `presets: ${e.message}`;
      this.renderMessages();
      return;
    }
    if (key !== this.presetKey) return;
    const p = findPreset(presets, src.preset);
    const lay = this.layout;
    if (!p || !lay) {
      this.presetNote = `vector from Preset Picker: unknown preset "${src.preset}"`;
      this.renderMessages();
      return;
    }
    const { global, map } = presetWeights(p);
    this.global = global;
    for (const lab of lay.all) this.weights.set(lab, map.has(lab) ? map.get(lab) : 1);
    this.showDescription(p);
    if ([...this.presetSel.options].some((o) => o.value === p.name)) this.presetSel.value = p.name;
    this.form = "present";
    this.localError = null;
    const mismatch = lay.architecture && p.layout && p.layout !== lay.architecture;
    this.presetNote = `vector from Preset Picker: "${p.name}"` +
      (mismatch ? ` (a ${p.layout} preset on a ${lay.architecture} layout)` : "") +
      " · editing the grid detaches it";
    const text = this.vectorText();
    this.writeVector(text);
    this.validation = null;
    this.scheduleValidate();
    this.renderValues();
    this.renderMessages();
    this.resize();
  }

  // ------------------------------------------------------------------ sync (events and tick)
  async loadLayout(src) {
    const seq = ++this.loadSeq;
    this.loadingKey = src.key;
    let data, err = null;
    try {
      data = src.lora ? await fetchLayoutForLora(src.lora) : await fetchLayoutForArch(src.architecture);
    } catch (e) {
      err = e;
    }
    if (seq !== this.loadSeq) return;
    this.loadingKey = null;
    if (err) {
      this.layoutError = src.lora ? `${src.lora}: ${err.message}` : `layout of ${src.architecture}: ${err.message}`;
      this.layoutKey = src.key;
      if (src.lora) {    // fall back to the chosen architecture's full layout, keep the error visible
        try {
          data = await fetchLayoutForArch(this.archChoice);
          if (seq !== this.loadSeq) return;
          src = { key: src.key, architecture: this.archChoice };
        } catch (e2) {
          data = null;
        }
      }
      if (!data) {
        this.layout = null;
        this.renderAll();
        return;
      }
    } else {
      this.layoutError = null;
    }
    this.layout = normLayout(data, src);
    this.layoutKey = src.key;
    this.presetKey = null;
    for (const lab of this.layout.all) if (!this.weights.has(lab)) this.weights.set(lab, 1);
    this.renderCells();
    this.renderSource();
    if (this.shownLayout && this.shownLayout !== src.key) this.resize(true);
    this.shownLayout = src.key;
    const w = findWidget(this.node, "vector");
    const text = w?.value ?? "";
    const untouched = !String(text).trim() || (this.autoText != null && text === this.autoText);
    if (untouched && !this.presetSource()) {
      // a fresh node (or one whose vector the grid filled in and nobody edited since): start from
      // "every block on" over this layout, so the grid and the widget agree
      this.form = "present";
      this.global = 1;
      for (const lab of this.layout.all) this.weights.set(lab, 1);
      this.autoText = this.vectorText();
      this.writeVector(this.autoText);
      this.scheduleValidate();
      this.renderAll();
    } else {
      this.readVector(String(text));
      this.renderAll();
    }
    this.sync();
  }

  sync(force = false) {
    if (!this.node.graph) return;
    if (this.root.dataset.nodeId !== String(this.node.id)) this.root.dataset.nodeId = String(this.node.id);
    const src = layoutSource(this.node, this.archChoice);
    this.sourceNote = src.note ?? null;
    if (force || (src.key !== this.layoutKey && src.key !== this.loadingKey)) {
      this.loadLayout(src);
      return;
    }
    if (!this.layout || this.loadingKey) return;
    // a Preset Picker feeding `vector`
    const ps = this.presetSource();
    if (ps?.picker) {
      const key = `${ps.picker.id}|${ps.preset}|${this.layoutKey}`;
      if (key !== this.presetKey) {
        this.presetKey = key;
        this.applyPreset(ps, key);
        return;
      }
    } else {
      if (this.presetKey) {
        this.presetKey = null;
        if (!this.presetNote?.startsWith("detached")) this.presetNote = null;
      }
      if (ps?.other) this.presetNote = `vector comes from ${ps.other}; the grid shows the widget's last value`;
      else if (this.presetNote && !this.presetNote.startsWith("detached")) this.presetNote = null;
    }
    const w = findWidget(this.node, "vector");
    const text = w ? String(w.value ?? "") : "";
    if (!this.writing && text !== this.lastVector) this.readVector(text);
    else this.renderMessages();
  }

  /** The summary of the last execution (UI data "chopshop_chop"). */
  showRun(sum) {
    if (!sum || typeof sum !== "object") return;
    const list = (a) => (Array.isArray(a) && a.length ? a.join(" ") : "none");
    const scaled = sum.scaled_blocks && Object.keys(sum.scaled_blocks).length
      ? ` · scaled ${Object.entries(sum.scaled_blocks).map(([k, v]) => `${k}×${fmtNumber(v)}`).join(" ")}` : "";
    const tensors = sum.tensors_in != null ? ` · tensors ${sum.tensors_in} → ${sum.tensors_out}` : "";
    this.runEl.textContent = `last run: kept ${list(sum.kept_blocks)}${scaled}${tensors}`;
    this.runEl.dataset.kept = Array.isArray(sum.kept_blocks) ? sum.kept_blocks.join(",") : "";
    this.runEl.style.display = "";
    this.resize();
  }

  dispose() {
    clearTimeout(this.valTimer);
    controllers.delete(this);
  }
}

// ===================================================================== Preset Picker line

class PresetLine {
  constructor(node) {
    this.node = node;
    this.key = null;
    this.seq = 0;
    injectStyle();
    this.vecEl = h("div", { class: "chopshop-line", "data-role": "preset-vector" });
    this.infoEl = h("div", { class: "chopshop-msg", "data-role": "preset-info" });
    this.descEl = h("div", { class: "chopshop-msg chopshop-desc", "data-role": "preset-description" });
    this.root = h("div", { class: "chopshop-w chopshop-preset" }, [this.descEl, this.vecEl, this.infoEl]);
    this.widget = node.addDOMWidget(PRESET_LINE_WIDGET, "chopshop_preset_line", this.root, {
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => this.minHeight(),
      hideOnZoom: false,
      serialize: false,
    });
    this.widget.serialize = false;
    const combo = findWidget(node, "preset");
    chainCallback(combo, "callback", () => this.sync(true));
    controllers.add(this);
  }

  minHeight() {
    if (this.root.isConnected && this.vecEl.offsetHeight > 0) {
      return Math.ceil(12 + 2 + this.descEl.offsetHeight + 4 + this.vecEl.offsetHeight + 4 + this.infoEl.offsetHeight
                       + WIDGET_MARGINS);
    }
    const lines = (t, per) => (t ? Math.ceil(t.length / per) : 1);
    return Math.max(44, 12 + 15 * lines(this.descEl.textContent, 45) + 15 * lines(this.vecEl.textContent, 40)
                    + 15 * lines(this.infoEl.textContent, 45) + 8) + WIDGET_MARGINS;
  }

  async refresh(presetName, lora, key) {
    const seq = ++this.seq;
    let text = "", info = "", err = null, desc = "", source = "";
    try {
      const presets = await fetchPresets();
      const p = findPreset(presets, presetName);
      if (!p) throw new Error(`unknown preset "${presetName}"`);
      desc = p.description || "";
      source = p.source || "";
      const { global, map } = presetWeights(p);
      let labels = p.labels ?? [];
      let scope = `full ${p.layout} layout, ${labels.length} blocks`;
      if (lora) {
        try {
          const lay = await fetchLayoutForLora(lora);
          if (lay.architecture && p.layout && lay.architecture !== p.layout) {
            err = `preset "${p.name}" is for ${p.layout} blocks, but ${lora} is ${lay.architecture_title ?? lay.architecture}`;
          } else {
            labels = lay.present ?? labels;
            scope = `over the ${labels.length} blocks of ${lora}`;
          }
        } catch (e) {
          scope += ` (layout of ${lora}: ${e.message})`;
        }
      }
      text = formatVector(global, labels.map((l) => (map.has(l) ? map.get(l) : 1)));
      const on = labels.filter((l) => (map.has(l) ? map.get(l) : 1) !== 0);
      info = `${scope} · on: ${on.length ? on.join(" ") : "none"}`;
    } catch (e) {
      err = e.message;
    }
    if (seq !== this.seq || key !== this.key) return;
    this.vecEl.replaceChildren(h("b", { text: "vector " }), document.createTextNode(text || "—"));
    this.vecEl.dataset.vector = text;
    this.descEl.textContent = desc;
    this.descEl.title = source ? `source: ${source}` : "";
    const combo = findWidget(this.node, "preset");
    if (combo) {
      combo.tooltip = desc ? `${presetName}: ${desc}` : combo.tooltip;
      if (combo.options) combo.options.tooltip = combo.tooltip;
    }
    this.infoEl.className = err ? "chopshop-msg chopshop-err" : "chopshop-msg";
    this.infoEl.textContent = err ? `⚠ ${err}` : info;
    fitNode(this.node, 340);
    requestAnimationFrame(() => fitNode(this.node, 340, 0, true));   // again (exactly) once the text is laid out
    // let Block Chops fed by this picker follow at once
    for (const d of downstreamOf(this.node, "vector")) d.node.__chopshopGrid?.sync();
  }

  sync(force = false) {
    if (!this.node.graph) return;
    const preset = findWidget(this.node, "preset")?.value ?? null;
    const up = findUpstreamLora(this.node);
    const lora = up.state === "lora" ? up.lora : null;
    const key = `${preset}|${lora ?? ""}`;
    if (!force && key === this.key) return;
    this.key = key;
    if (preset == null) return;
    this.refresh(preset, lora, key);
  }

  dispose() {
    controllers.delete(this);
  }
}

// ===================================================================== registration

function attach(node, Ctor, prop) {
  if (node[prop]) return node[prop];
  const c = new Ctor(node);
  node[prop] = c;
  chainCallback(node, "onRemoved", () => c.dispose());
  chainCallback(node, "onConfigure", () => setTimeout(() => c.sync(true), 0));
  chainCallback(node, "onConnectionsChange", () => setTimeout(() => c.sync(), 0));
  if (Ctor === BlockGrid) {
    const vw = findWidget(node, "vector");
    chainCallback(vw, "callback", () => { if (!c.writing) c.sync(); });
  }
  setTimeout(() => c.sync(), 0);
  return c;
}

let tickTimer = null;
function startTick() {
  if (tickTimer) return;
  tickTimer = setInterval(() => {
    for (const c of [...controllers]) {
      if (!c.node.graph) continue;
      try {
        c.sync();
      } catch (e) {
        console.warn("[LoRAChopShop] sync failed", e);
      }
    }
  }, TICK_MS);
}

app.registerExtension({
  name: "LoRAChopShop.BlockGrid",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const cls = nodeData?.name ?? nodeType.comfyClass;
    if (cls === NODE.chop) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () { attach(this, BlockGrid, "__chopshopGrid"); });
      chainCallback(nodeType.prototype, "onExecuted", function (message) {
        this.__chopshopGrid?.showRun(message?.chopshop_chop?.[0]);
      });
    } else if (cls === NODE.picker) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () { attach(this, PresetLine, "__chopshopPreset"); });
    }
  },
  setup() {
    injectStyle();
    startTick();
    window.__chopshopBlockGrid = { version: 1, controllers };
  },
});
