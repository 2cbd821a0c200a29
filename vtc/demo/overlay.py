"""Overlays of what a compressor did to the visual tokens, drawn with PIL (pure functions, no Gradio).

A media item's tokens form a grid ``(t, h, w)`` in row-major order; ``assign[j]`` is the output slot of
source token ``j`` (-1: dropped). A slot that received one token is *kept*, a slot that received several
is a *merge*. On the picture (the grid stretched over the whole image or frame):

- kept tokens stay clear,
- dropped tokens are dimmed,
- merged tokens are tinted with the colour of the slot they merged into.

For a video, frame ``i`` of ``n`` shows temporal slice ``i * t // n`` of the grid (Qwen-VL packs two
consecutive frames into one temporal slice).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

DIM_ALPHA = 185  # opacity of the dark veil over dropped tokens
MERGE_ALPHA = 130  # opacity of the slot colour over merged tokens
MAX_SIDE = 448  # overlays are drawn on a copy scaled to fit this size


@dataclass(frozen=True)
class TokenCounts:
    """What happened to the tokens of one item: kept alone, merged (tokens and slots), dropped."""

    total: int
    kept: int
    merged: int
    merge_slots: int
    dropped: int

    @property
    def slots(self) -> int:
        """Tokens after compression: single kept tokens plus merge slots."""
        return self.kept + self.merge_slots

    def describe(self) -> str:
        parts = [f"{self.kept} kept"]
        if self.merged:
            parts.append(f"{self.merged} merged into {self.merge_slots}")
        parts.append(f"{self.dropped} dropped")
        return " · ".join(parts)


def slot_sizes(assign: Sequence[int]) -> dict[int, int]:
    """How many source tokens went to each slot (dropped tokens, -1, are left out)."""
    sizes: dict[int, int] = {}
    for slot in assign:
        if slot >= 0:
            sizes[slot] = sizes.get(slot, 0) + 1
    return sizes


def token_counts(assign: Sequence[int]) -> TokenCounts:
    """Kept, merged and dropped counts of one item's ``assign``."""
    sizes = slot_sizes(assign)
    merged_slots = [s for s, n in sizes.items() if n > 1]
    merged = sum(sizes[s] for s in merged_slots)
    kept = sum(1 for n in sizes.values() if n == 1)
    dropped = sum(1 for slot in assign if slot < 0)
    return TokenCounts(len(assign), kept, merged, len(merged_slots), dropped)


def slot_color(slot: int) -> tuple[int, int, int]:
    """A bright colour per slot; neighbouring slot numbers get far-apart hues (golden-ratio steps)."""
    hue = (slot * 0.618033988749895) % 1.0
    value = 0.95 if slot % 2 == 0 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def fit(picture: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """An RGB copy no larger than ``max_side`` on its longer side (small pictures are scaled up to it)."""
    picture = picture.convert("RGB")
    scale = max_side / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.BICUBIC if scale < 1 else Image.NEAREST)


def cell_box(y: int, x: int, grid_hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box ``(x0, y0, x1, y1)`` (inclusive) of grid cell ``(y, x)`` on a picture of ``size``."""
    h, w = grid_hw
    width, height = size
    x0, x1 = round(x * width / w), round((x + 1) * width / w) - 1
    y0, y1 = round(y * height / h), round((y + 1) * height / h) - 1
    return x0, y0, max(x0, x1), max(y0, y1)


def draw_slice(picture: Image.Image, assign: Sequence[int], grid_hw: tuple[int, int],
               sizes: dict[int, int] | None = None) -> Image.Image:
    """One picture with the ``h*w`` tokens of one temporal slice drawn over it (``assign`` of that slice).

    ``sizes``: slot sizes over the whole item (merges can span frames); computed from ``assign`` if not given.
    """
    h, w = grid_hw
    if len(assign) != h * w:
        raise ValueError(f"assign: expected {h}x{w} = {h * w} tokens for the grid, got {len(assign)}")
    sizes = slot_sizes(assign) if sizes is None else sizes
    base = picture.convert("RGBA")
    veil = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(veil)
    for j, slot in enumerate(assign):
        box = cell_box(j // w, j % w, grid_hw, base.size)
        if slot < 0:
            draw.rectangle(box, fill=(0, 0, 0, DIM_ALPHA))
        elif sizes.get(slot, 1) > 1:
            draw.rectangle(box, fill=(*slot_color(slot), MERGE_ALPHA))
    return Image.alpha_composite(base, veil).convert("RGB")


def frame_slice(frame: int, frames: int, t: int) -> int:
    """The temporal slice of the token grid that frame ``frame`` of ``frames`` belongs to."""
    return min(frame * t // max(frames, 1), t - 1)


def draw_overlays(pictures: Sequence[Image.Image], assign: Sequence[int], grid: Sequence[int],
                  max_side: int = MAX_SIDE) -> list[Image.Image]:
    """Each picture (one image, or the sampled frames of a video) with its tokens drawn over it.

    ``grid`` is ``(t, h, w)``; ``assign`` has ``t*h*w`` entries in row-major order.
    """
    t, h, w = (int(g) for g in grid)
    assign = [int(a) for a in assign]
    if len(assign) != t * h * w:
        raise ValueError(f"assign: expected {t}x{h}x{w} = {t * h * w} tokens, got {len(assign)}")
    if not pictures:
        raise ValueError("pictures: expected at least one image or frame")
    sizes = slot_sizes(assign)
    out = []
    for i, picture in enumerate(pictures):
        k = frame_slice(i, len(pictures), t)
        out.append(draw_slice(fit(picture, max_side), assign[k * h * w : (k + 1) * h * w], (h, w), sizes))
    return out


def contact_sheet(pictures: Sequence[Image.Image], columns: int = 4, side: int = 112) -> Image.Image:
    """Thumbnails of ``pictures`` in a grid (a video preview)."""
    if not pictures:
        raise ValueError("pictures: expected at least one image or frame")
    columns = max(1, min(columns, len(pictures)))
    rows = -(-len(pictures) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side), (255, 255, 255))
    for i, picture in enumerate(pictures):
        thumb = fit(picture, side)
        sheet.paste(thumb, ((i % columns) * side, (i // columns) * side))
    return sheet
