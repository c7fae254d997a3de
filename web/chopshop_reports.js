// LoRA Chop Shop: show the text UI output of Save LoRA (the saved path) and SVD Resize (its report) on the
// node. The stock frontend renders `text` UI data only for core "Preview as Text", so without this the
// user would not see where the file went. A read-only, non-serialised DOM widget; no canvas drawing.
//
// The box has a FIXED height (classic canvas and Nodes 2.0 alike) and scrolls inside the node, so a
// 360-line resize report never grows the node over its neighbours. The per-block summary shows first.
import { app } from "../../scripts/app.js";
import { NODE, h, isolateKeys, fitNode, injectStyle } from "./chopshop_common.js";

const REPORT_WIDGET = "chopshop_report";
const WIDGET_MARGINS = 20;
const SPECS = {
  [NODE.save]: { title: "saved", boxHeight: 40, role: "saved-path" },
  [NODE.resize]: { title: "report", boxHeight: 200, role: "resize-report" },
};

/** The report with its summary first: the "Per block" section and the totals after it move above the
 * per-module lines (no-op when the report already starts with them). */
export function summaryFirst(text) {
  const lines = String(text).split("\n");
  const at = lines.findIndex((l) => /^Per block/.test(l));
  if (at <= 1) return String(text);
  return [...lines.slice(at), "", ...lines.slice(0, at)].join("\n");
}

class ReportBox {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    injectStyle();
    this.textEl = h("div", { class: "chopshop-line", "data-role": spec.role,
                             style: "white-space:pre;word-break:normal" });
    this.scrollEl = h("div", { class: "chopshop-scroll", "data-role": `${spec.role}-scroll` }, [this.textEl]);
    this.root = h("div", { class: "chopshop-w chopshop-report",
                           style: `height:${spec.boxHeight}px;max-height:${spec.boxHeight}px` }, [this.scrollEl]);
    isolateKeys(this.root);
    this.scrollEl.addEventListener("wheel", (e) => {
      if (this.scrollEl.scrollHeight > this.scrollEl.clientHeight) e.stopPropagation();
    }, { passive: true });
    const hgt = spec.boxHeight + WIDGET_MARGINS;
    this.widget = node.addDOMWidget(REPORT_WIDGET, "chopshop_report", this.root, {
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => hgt,
      getMaxHeight: () => hgt,
      getHeight: () => hgt,
      hideOnZoom: false,
      serialize: false,
    });
    this.widget.serialize = false;
  }

  show(text) {
    const s = String(text ?? "");
    const shown = this.spec.title === "saved" ? `saved: ${s}` : summaryFirst(s);
    this.textEl.textContent = shown;
    this.textEl.style.whiteSpace = this.spec.title === "saved" ? "pre-wrap" : "pre";
    this.textEl.style.wordBreak = this.spec.title === "saved" ? "break-all" : "normal";
    this.textEl.dataset.value = s;
    this.scrollEl.scrollTop = 0;
    fitNode(this.node, this.spec.title === "saved" ? 0 : 380);
  }
}

app.registerExtension({
  name: "LoRAChopShop.Reports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const cls = nodeData?.name ?? nodeType.comfyClass;
    const spec = SPECS[cls];
    if (!spec) return;
    const orig = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = orig?.apply(this, arguments);
      try {
        const t = message?.text;
        const text = Array.isArray(t) ? t.join("\n") : t;
        if (text != null && text !== "") {
          this.__chopshopReport ??= new ReportBox(this, spec);
          this.__chopshopReport.show(text);
        }
      } catch (e) {
        console.warn("[LoRAChopShop] report failed", e);
      }
      return r;
    };
  },
});
