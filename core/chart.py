"""The Block Layout Inspector's energy chart: one horizontal bar per block (model order), its share of the
LoRA's block energy. Drawn with Pillow, imported lazily so the rest of the core works without it."""
from __future__ import annotations

BG = (24, 26, 30)
FG = (225, 228, 232)
GRID = (60, 64, 72)
BAR = {"INP": (86, 156, 214), "MID": (197, 134, 192), "OUT": (78, 201, 176),
       "D": (86, 156, 214), "S": (78, 201, 176), "B": (220, 170, 90)}
EMPTY = (110, 110, 110)


def _colour(label: str) -> tuple[int, int, int]:
    for prefix, c in BAR.items():
        if label.startswith(prefix):
            return c
    return (200, 200, 200)


def _font(size: int):
    """Pillow's built-in font at ``size`` px (scalable since Pillow 10.1), else its small bitmap font."""
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def energy_chart(report: dict, width: int = 720, row: int = 26, max_rows: int = 80, font_px: int = 16):
    """A PIL RGB image of ``report['blocks']`` energy shares (``inspect_report.inspect`` output).

    Blocks without a measured energy are drawn as an empty outline. At most ``max_rows`` bars are drawn
    (the rest are summarised in the last line) so a 60-block DiT stays readable. Text is ``font_px`` high,
    legible when the image is shown at its own size (Preview Image, Save Image)."""
    from PIL import Image, ImageDraw

    font = _font(font_px)
    blocks = list(report.get("blocks") or [])
    shown, rest = blocks[:max_rows], blocks[max_rows:]
    top, left, right = 44, 78, 84
    height = top + row * max(len(shown), 1) + (row if rest else 0) + 12
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)
    title = f"{report.get('architecture_title', '?')} - block energy share"
    if report.get("energy_total") is not None:
        title += f"  ({len(blocks)} blocks, {report.get('modules', 0)} modules)"
    d.text((8, 8), title, fill=FG, font=font)
    bar_w = width - left - right
    shares = [b.get("energy_share") for b in shown]
    peak = max([s for s in shares if s is not None] or [0.0])
    scale = bar_w / peak if peak > 0 else 0.0
    for frac in (0.25, 0.5, 0.75, 1.0):
        x = left + int(bar_w * frac)
        d.line([(x, top - 4), (x, top + row * len(shown))], fill=GRID)
    if not shown:
        d.text((left, top), "no blocks in this LoRA (text-encoder or non-block layers only)", fill=FG, font=font)
    for i, b in enumerate(shown):
        y = top + i * row
        d.text((8, y + 4), b["label"], fill=FG, font=font)
        share = b.get("energy_share")
        if share is None:
            d.rectangle([left, y + 3, left + 40, y + row - 3], outline=EMPTY)
            d.text((left + 46, y + 3), "n/a", fill=EMPTY, font=font)
            continue
        w = max(1, int(share * scale)) if share > 0 else 0
        if w:
            d.rectangle([left, y + 3, left + w, y + row - 3], fill=_colour(b["label"]))
        d.text((left + w + 6, y + 4), f"{100 * share:.1f}%", fill=FG, font=font)
    if rest:
        y = top + len(shown) * row
        d.text((8, y + 3), f"... {len(rest)} more blocks ({100 * sum(b.get('energy_share') or 0 for b in rest):.1f}%)",
               fill=FG, font=font)
    return img
