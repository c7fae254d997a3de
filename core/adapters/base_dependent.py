"""Adapters whose ΔW depends on the base weight W0: (IA)^3, GLoRA, OFT, BOFT and set-weight modules.
They are recognised and passed through; a LoRA file alone cannot measure or resize them."""
from __future__ import annotations

from .base import Adapter


class IA3(Adapter):
    kind, name = "ia3", "(IA)^3"
    needs_base = True
    scale_roles = ("ia3_weight",)
    has_alpha = False

    def recognise(self, shapes):
        return "ia3_weight" in shapes


class GLoRA(Adapter):
    kind, name = "glora", "GLoRA"
    needs_base = True
    scale_roles = ("a1", "b1")
    required = ("a1", "a2", "b1", "b2")

    def recognise(self, shapes):
        return "a1" in shapes

    def rank(self, shapes):
        return shapes["a2"][0] if "a2" in shapes else None

    def delta_shape(self, shapes):
        return (shapes["b1"][0], shapes["b2"][1]) if "b1" in shapes and "b2" in shapes else None


class OFT(Adapter):
    kind, name = "oft", "OFT"
    needs_base = True
    has_alpha = False

    def recognise(self, shapes):
        return "oft_blocks" in shapes and len(shapes["oft_blocks"]) != 4


class BOFT(OFT):
    kind, name = "boft", "BOFT"

    def recognise(self, shapes):
        return "oft_blocks" in shapes and len(shapes["oft_blocks"]) == 4


class SetWeight(Adapter):
    kind, name = "set", "set weight"
    needs_base = True
    has_alpha = False

    def recognise(self, shapes):
        return "set_weight" in shapes
