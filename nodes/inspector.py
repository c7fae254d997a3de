"""Block Layout Inspector (Chop Shop): blocks, counts and energy shares of a LoRA, as text and a chart."""
from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ..core.chart import energy_chart
from ..core.inspect_report import inspect, render_text
from .common import CATEGORY, as_lora, image_tensor, lora_input, progress_bar


def chart_tensor(report: dict) -> torch.Tensor:
    return image_tensor(energy_chart(report))


class ChopShopBlockLayoutInspector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ChopShopBlockLayoutInspector",
            display_name="Block Layout Inspector (Chop Shop)",
            category=CATEGORY,
            description="Shows which blocks a LoRA trains (labels INP01..., MID00..., OUT00... / D00, S00 / "
                        "B00 in model order), tensors and modules per block, each block's share of the "
                        "LoRA's energy (squared Frobenius norm of its weight deltas), the vector template for "
                        "Block Chop, pass-through counts and training metadata.",
            inputs=[lora_input(tooltip="The LoRA to inspect (from Load LoRA File or any Chop Shop node).")],
            outputs=[
                io.String.Output("report", display_name="report",
                                 tooltip="The layout report as text (wire it into 'Preview as Text' to read it)."),
                io.Image.Output("chart", display_name="chart",
                                tooltip="Bar chart of each block's energy share, in model order."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lora) -> io.NodeOutput:
        lf = as_lora(lora)
        progress, _ = progress_bar()
        report = inspect(lf, energies=True, progress=progress)
        text = render_text(report)
        chart = chart_tensor(report)
        # the node shows the block table (web/chopshop_inspector.js); the chart is an output to preview or save
        return io.NodeOutput(text, chart, ui={"text": [text], "chopshop_layout": [report]})
