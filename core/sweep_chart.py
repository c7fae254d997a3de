"""Block Impact Sweep, pictures: the labelled grid of renders and the impact chart. Pillow (default font),
imported lazily like core/chart.py."""
from __future__ import annotations

import math

from .chart import BG, FG, GRID

DIM = (92, 96, 104)
SUB = (185, 188, 194)
KEPT_BORDER = (120, 220, 120)
LINE_H = 13


def _font():
    from PIL import ImageFont
    return ImageFont.load_default()


def tile_size(width: int, height: int, smallest: int = 160, largest: int = 384) -> tuple[int, int]:
    """The size a render is drawn at: its own, scaled so the longer side lies in [smallest, largest]."""
    side = max(width, height)
    scale = largest / side if side > largest else (smallest / side if side < smallest else 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


PAD = 6


def grid_layout(count: int, width: int, height: int, lines: int = 3, columns: int | None = None) -> dict:
    """Where ``grid`` draws ``count`` renders of ``width`` x ``height``: the canvas size and, per render,
    the tile box (x0, y0, x1, y1) and the label box under it."""
    tw, th = tile_size(width, height)
    strip = 6 + LINE_H * lines
    cols = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / cols)
    cell_w, cell_h = tw + 2 * PAD, th + strip + 2 * PAD
    tiles, label_boxes = [], []
    for i in range(count):
        x, y = (i % cols) * cell_w + PAD, (i // cols) * cell_h + PAD
        tiles.append((x, y, x + tw, y + th))
        label_boxes.append((x, y + th + 2, x + tw, y + th + strip))
    return {"size": (cols * cell_w, rows * cell_h), "tile": (tw, th), "tiles": tiles, "labels": label_boxes}


def grid(images: list, labels: list[list[str]], highlight: set[int] = frozenset(), columns: int | None = None):
    """A PIL RGB image: one tile per render (PIL images, same size), its label lines under it. Tiles whose
    index is in ``highlight`` get a green frame (the suggested blocks)."""
    from PIL import Image, ImageDraw
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    font = _font()
    lay = grid_layout(len(images), *images[0].size, max((len(t) for t in labels), default=1), columns)
    tw, th = lay["tile"]
    out = Image.new("RGB", lay["size"], BG)
    d = ImageDraw.Draw(out)
    resample = Image.NEAREST if tw >= images[0].size[0] else Image.LANCZOS
    for i, (img, text) in enumerate(zip(images, labels)):
        x, y, _, _ = lay["tiles"][i]
        out.paste(img.convert("RGB").resize((tw, th), resample), (x, y))
        if i in highlight:
            d.rectangle([x - 3, y - 3, x + tw + 2, y + th + 2], outline=KEPT_BORDER, width=3)
        for j, line in enumerate(text):
            d.text((x + 2, y + th + 4 + j * LINE_H), _fit(d, line, tw - 4, font), fill=FG if j == 0 else SUB,
                   font=font)
    return out


def _fit(d, text: str, width: int, font) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if d.textlength(text, font=font) <= width:
        return text
    while text and d.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def impact_chart(rep: dict, title: str = "", width: int = 720, row: int = 20, max_rows: int = 70):
    """A PIL RGB bar chart of a sweep report: one row per variant, highest impact first. Solid bar: latent
    impact (bright for the suggested blocks); white tick: pixel-space impact; thin grey bar: energy share."""
    from PIL import Image, ImageDraw
    font = _font()
    rows = rep["blocks"][:max_rows]
    left, right, top = 150, 150, 46
    chosen = set(rep.get("suggested_variants") or [])
    height = top + row * max(len(rows), 1) + 28
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)
    d.text((8, 6), title or f"{rep['architecture']} - {rep['mode']} sweep: impact per "
           f"{'block' if rep['mode'] in ('solo', 'knock-out') else 'variant'}", fill=FG, font=font)
    d.text((8, 22), "bar: latent impact   |: pixel impact   grey: energy share   green: kept by the suggestion",
           fill=DIM, font=font)
    bar_w = width - left - right
    peak = max([1.0] + [r["impact"] for r in rows] + [r.get("impact_pixels") or 0 for r in rows])
    for frac in (0.25, 0.5, 0.75, 1.0):
        x = left + int(bar_w * frac / peak)
        d.line([(x, top - 4), (x, top + row * len(rows))], fill=GRID)
    for i, r in enumerate(rows):
        y = top + i * row
        is_kept = r["index"] in chosen
        d.text((8, y + 4), _fit(d, r["label"], left - 40, font), fill=FG, font=font)
        colour = (120, 220, 120) if is_kept else DIM
        w = int(bar_w * r["impact"] / peak)
        if w > 0:
            d.rectangle([left, y + 3, left + w, y + row - 7], fill=colour)
        e = int(bar_w * min(r["energy"], peak) / peak)
        if e > 0:
            d.rectangle([left, y + row - 5, left + e, y + row - 3], fill=(150, 150, 150))
        px = r.get("impact_pixels")
        if px is not None:
            xp = left + int(bar_w * px / peak)
            d.line([(xp, y + 1), (xp, y + row - 3)], fill=(255, 255, 255), width=2)
        text = f"{r['impact']:.3f}" + (f" px {px:.3f}" if px is not None else "") + f"  e {100 * r['energy']:.1f}%"
        d.text((width - right + 6, y + 4), text, fill=FG, font=font)
    y = top + row * len(rows) + 6
    d.text((8, y), _fit(d, f"suggested vector (keep {rep['keep_share']:.0%}): {rep['suggested_vector']}",
                        width - 16, font), fill=(120, 220, 120), font=font)
    return img
