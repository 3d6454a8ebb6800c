"""One PNG: a row of digits per sampling setting, the setting's name on the left."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_WIDTH = 200
TITLE_HEIGHT = 24


def to_uint8(images, zoom):
    """(n, 1, h, w) in [-1, 1] -> list of (h*zoom, w*zoom) uint8 arrays, ink white on black as in the data."""
    pixels = ((images[:, 0].float().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return [np.kron(p, np.ones((zoom, zoom), dtype=np.uint8)) for p in pixels]


def draw_grid(rows, title="", zoom=2, gap=2):
    """rows: list of (label, images (n, 1, h, w)) -> PIL image."""
    tiles = [(label, to_uint8(images, zoom)) for label, images in rows]
    tile_h, tile_w = tiles[0][1][0].shape
    columns = max(len(t) for _, t in tiles)
    width = LABEL_WIDTH + columns * (tile_w + gap)
    height = TITLE_HEIGHT + len(tiles) * (tile_h + gap)
    canvas = Image.new("L", (width, height), 40)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    draw.text((4, 6), title, fill=255, font=font)
    for r, (label, row) in enumerate(tiles):
        y = TITLE_HEIGHT + r * (tile_h + gap)
        draw.text((4, y + tile_h // 2 - 6), label, fill=255, font=font)
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (LABEL_WIDTH + c * (tile_w + gap), y))
    return canvas
