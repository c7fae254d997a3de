// LoRA Chop Shop: the Block Layout Inspector's block table on the node.
//
// On execution the node's UI message carries {"text": [...], "chopshop_layout": [report]}. This adds a
// read-only DOM widget with one row per block: label, name, modules, tensors and the energy share as a
// bar (the legible form of the `chart` output, which is not previewed on the node). The box has a fixed
// height that shows every block of an SD1.5/SDXL LoRA (26 rows) and scrolls for bigger layouts (Flux:
// 57 blocks), under the classic canvas and Nodes 2.0 alike. Nothing is drawn on the canvas; the widget
// is not serialised.
import { app } from "../../scripts/app.js";
import { NODE, findWidget, h, isolateKeys, fitNode, injectStyle, fmtNumber } from "./chopshop_common.js";

const TABLE_WIDGET = "chopshop_layout_table";
const ROW_H = 17;
const MAX_ROWS = 26;          // every SD1.5 / SDXL block without scrolling

function pct(x) {
  return x == null || !Number.isFinite(Number(x)) ? null : Math.max(0, Number(x) * 100);
}

class LayoutTable {
  constructor(node) {
    this.node = node;
    this.report = null;
    injectStyle();
    this.headEl = h("div", { class: "chopshop-msg", "data-role": "layout-summary" });
    this.scrollEl = h("div", { class: "chopshop-scroll" });
    this.root = h("div", { class: "chopshop-w chopshop-layout" }, [this.headEl, this.scrollEl]);
    isolateKeys(this.root);
    // let the table scroll instead of zooming the canvas
    this.scrollEl.addEventListener("wheel", (e) => {
      if (this.scrollEl.scrollHeight > this.scrollEl.clientHeight) e.stopPropagation();
    }, { passive: true });
    this.widget = node.addDOMWidget(TABLE_WIDGET, "chopshop_layout_table", this.root, {
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => this.height(),
      getMaxHeight: () => this.height(),
      getHeight: () => this.height(),
      hideOnZoom: false,
      serialize: false,
    });
    this.widget.serialize = false;
  }

  /** The box height (px): summary line + header + min(rows, MAX_ROWS) rows; the widget adds 20 px margins. */
  boxHeight() {
    const n = this.report?.blocks?.length ?? 0;
    if (!n) return 40;
    return 12 + 18 + ROW_H * (Math.min(n, MAX_ROWS) + 1) + 8;
  }

  height() {
    return this.boxHeight() + 20;
  }

  show(report) {
    this.report = report;
    const blocks = Array.isArray(report?.blocks) ? report.blocks : [];
    const pt = report?.pass_through;
    const bits = [
      `${report?.architecture_title ?? "?"} (${report?.architecture ?? "?"})`,
      `${blocks.length} blocks`,
      report?.modules != null ? `${report.modules} modules` : null,
      pt?.tensors != null ? `${pt.tensors} pass-through tensors` : null,
    ].filter(Boolean);
    this.headEl.textContent = bits.join(" · ");
    const maxShare = Math.max(0, ...blocks.map((b) => pct(b.energy_share) ?? 0)) || 1;
    const rows = blocks.map((b) => {
      const p = pct(b.energy_share);
      const bar = p == null
        ? h("span", { class: "chopshop-msg", text: "n/a" })
        : h("div", { class: "cs-bar", title: `${fmtNumber(Number(p.toFixed(2)))}% of the block energy` }, [
          h("span", { style: `width:${Math.max(1, (p / maxShare) * 100).toFixed(1)}%` }),
          h("em", { text: `${p.toFixed(1)}%` })]);
      return h("tr", { dataset: { label: String(b.label ?? "") } }, [
        h("td", { text: String(b.label ?? "") }),
        h("td", { text: String(b.name ?? "") }),
        h("td", { class: "num", text: String(b.modules ?? "") }),
        h("td", { class: "num", text: String(b.tensors ?? "") }),
        h("td", { style: "width:40%" }, [bar]),
      ]);
    });
    const table = h("table", { class: "chopshop-table", "data-role": "layout-table" }, [
      h("thead", {}, [h("tr", {}, ["label", "name", "modules", "tensors", "energy share"].map(
        (t) => h("th", { text: t })))]),
      h("tbody", {}, rows),
    ]);
    this.scrollEl.replaceChildren(table);
    this.root.style.height = `${this.boxHeight()}px`;
    this.root.style.maxHeight = `${this.boxHeight()}px`;
    fitNode(this.node, 460);
  }
}

app.registerExtension({
  name: "LoRAChopShop.LayoutTable",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if ((nodeData?.name ?? nodeType.comfyClass) !== NODE.inspector) return;
    const orig = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = orig?.apply(this, arguments);
      try {
        const report = message?.chopshop_layout?.[0];
        if (report && typeof report === "object") {
          if (!this.__chopshopTable) {
            this.__chopshopTable = findWidget(this, TABLE_WIDGET) ? this.__chopshopTable : new LayoutTable(this);
          }
          this.__chopshopTable?.show(report);
        }
      } catch (e) {
        console.warn("[LoRAChopShop] layout table failed", e);
      }
      return r;
    };
  },
});
