// LoRA Chop Shop: show the text UI output of Save LoRA (the saved path) and SVD Resize (its report) on the
// node. The stock frontend renders `text` UI data only for core "Preview as Text", so without this the
// user would not see where the file went. A read-only, non-serialised DOM widget; no canvas drawing.
import { app } from "../../scripts/app.js";
import { NODE, h, isolateKeys, fitNode, injectStyle } from "./chopshop_common.js";

const REPORT_WIDGET = "chopshop_report";
const SPECS = {
  [NODE.save]: { title: "saved", maxLines: 3, role: "saved-path" },
  [NODE.resize]: { title: "report", maxLines: 9, role: "resize-report" },
};

class ReportBox {
  constructor(node, spec) {
    this.node = node;
    this.spec = spec;
    this.lines = 1;
    injectStyle();
    this.textEl = h("div", { class: "chopshop-line", "data-role": spec.role,
                             style: "white-space:pre-wrap;word-break:break-word" });
    this.scrollEl = h("div", { class: "chopshop-scroll" }, [this.textEl]);
    this.root = h("div", { class: "chopshop-w chopshop-report" }, [this.scrollEl]);
    isolateKeys(this.root);
    this.scrollEl.addEventListener("wheel", (e) => {
      if (this.scrollEl.scrollHeight > this.scrollEl.clientHeight) e.stopPropagation();
    }, { passive: true });
    this.widget = node.addDOMWidget(REPORT_WIDGET, "chopshop_report", this.root, {
      getValue: () => "",
      setValue: () => {},
      getMinHeight: () => 12 + 2 + 15 * Math.min(this.lines, spec.maxLines) + 20,
      hideOnZoom: false,
      serialize: false,
    });
    this.widget.serialize = false;
  }

  show(text) {
    const s = String(text ?? "");
    this.textEl.textContent = this.spec.title === "saved" ? `saved: ${s}` : s;
    this.textEl.dataset.value = s;
    this.lines = Math.max(1, s.split("\n").reduce((a, l) => a + Math.max(1, Math.ceil(l.length / 48)), 0));
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
