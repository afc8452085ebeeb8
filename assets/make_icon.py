"""Draw assets/icon.png, the explorer's page icon (browser tab), with Pillow.

The app serves it itself: a Material-symbol page icon would make every page load fetch the
favicon from a font server, which fails on a machine without internet.
Run: python assets/make_icon.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
BACKGROUND = "#1f2a36"
# a 3 x 3 grid of "distilled images" in the app's chart colours; the centre one carries the
# committee's vote (the check mark)
TILES = ["#e4572e", "#2e86ab", "#9e9e9e", "#2e86ab", "#e4572e", "#9e9e9e", "#e4572e", "#2e86ab"]


def draw(size: int = SIZE) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([0, 0, size - 1, size - 1], radius=size // 6, fill=BACKGROUND)
    pad, gap = size // 8, size // 16
    cell = (size - 2 * pad - 2 * gap) // 3
    colours = iter(TILES)
    for r in range(3):
        for c in range(3):
            x, y = pad + c * (cell + gap), pad + r * (cell + gap)
            if (r, c) == (1, 1):
                d.rounded_rectangle([x, y, x + cell, y + cell], radius=2, fill="#ffffff")
                w = max(2, size // 24)
                pts = [
                    (x + cell * 0.2, y + cell * 0.55),
                    (x + cell * 0.42, y + cell * 0.78),
                    (x + cell * 0.82, y + cell * 0.25),
                ]
                d.line(pts, fill="#2a9d4b", width=w, joint="curve")
            else:
                d.rounded_rectangle([x, y, x + cell, y + cell], radius=2, fill=next(colours))
    return img


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "icon.png"
    draw().save(out, optimize=True)
    print(out)
