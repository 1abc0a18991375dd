// Shows the text an IQA-MAP node returns in its "ui" (IQA Score) in a read-only widget on the node.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

app.registerExtension({
  name: "iqa_map.ShowScore",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!["IQAMAP_IQAScore", "IQAMAP_IQASelect"].includes(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text || []).join("\n");
      let widget = this.widgets?.find((w) => w.name === "iqa_score_text");
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, "iqa_score_text", ["STRING", { multiline: true }], app).widget;
        widget.inputEl.readOnly = true;
        widget.inputEl.style.opacity = 0.8;
        widget.serialize = false;
      }
      widget.value = text;
      this.setSize?.(this.computeSize());
    };
  },
});
