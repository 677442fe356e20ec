"""The built-in dataset: procedurally drawn 64x64 cartoon faces, the default everywhere.

Why it exists: a fresh machine must be able to train right after ``pip install`` on any
OS, offline, with nothing downloaded and no dataset licence to accept. Every image is a
pure function of ``(seed, index)`` (its own ``numpy.random.default_rng([seed, index])``,
never the global RNG), so the coordinator and every worker agree on image ``i`` without
shipping a byte, and a unit's result can be recomputed. The faces vary in skin tone,
head shape, pose, hair, eyes, brows, nose, mouth, glasses and background, which is
enough shared structure (two eyes above a mouth inside an oval) that a DCGAN visibly
learns it within an epoch or two, and enough variety that it cannot just memorise one.

Drawing happens with Pillow at 4x (256x256) without anti-aliasing and is then
downsampled with LANCZOS, which anti-aliases for free; see ``docs/builtin-dataset.md``.
"""

from __future__ import annotations

import colorsys
import math
import operator
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SCALE = 4
_CANVAS = IMAGE_SIZE * _SCALE  # drawn at 256x256, stored at 64x64

Color = tuple[int, int, int]

_SKIN_TONES: tuple[Color, ...] = (
    (255, 226, 204),
    (241, 194, 160),
    (224, 172, 128),
    (198, 136, 96),
    (161, 102, 68),
    (120, 76, 50),
    (86, 56, 38),
)
_HAIR_COLORS: tuple[Color, ...] = (
    (28, 24, 22),  # black
    (62, 40, 28),  # dark brown
    (104, 66, 38),  # brown
    (150, 74, 36),  # auburn
    (196, 104, 48),  # ginger
    (222, 186, 118),  # blond
    (160, 158, 156),  # grey
    (232, 230, 222),  # white
)
_DYED_HAIR: tuple[Color, ...] = ((60, 90, 200), (220, 80, 150), (60, 160, 90), (140, 70, 190))
_EYE_COLORS: tuple[Color, ...] = (
    (70, 44, 26),
    (110, 70, 36),
    (60, 110, 170),
    (70, 130, 80),
    (128, 110, 60),
    (110, 120, 130),
)
_HAIR_STYLES = ("none", "short", "long", "bob", "curly", "bun", "fringe", "mohawk", "cap")

# Masks for the gradient backgrounds, made once: 64x64 is enough for a smooth ramp.
_VERTICAL = Image.linear_gradient("L").resize((IMAGE_SIZE, IMAGE_SIZE))
_RADIAL = Image.radial_gradient("L").resize((IMAGE_SIZE, IMAGE_SIZE))


class _Draws:
    """Uniform numbers from one pre-drawn block: far cheaper than a numpy call apiece."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._block: list[float] = []

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if not self._block:
            self._block = self._rng.random(64).tolist()
        return low + (high - low) * self._block.pop()

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def pick(self, n: int) -> int:
        return min(int(self.uniform() * n), n - 1)


def _mix(a: Color, b: Color, t: float) -> Color:
    return (
        int(a[0] + (b[0] - a[0]) * t),
        int(a[1] + (b[1] - a[1]) * t),
        int(a[2] + (b[2] - a[2]) * t),
    )


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))


def _skin(d: _Draws) -> Color:
    pos = d.uniform(0, len(_SKIN_TONES) - 1)
    i = min(int(pos), len(_SKIN_TONES) - 2)
    base = _mix(_SKIN_TONES[i], _SKIN_TONES[i + 1], pos - i)
    return _mix(base, _hsv(d.uniform(0.0, 0.1), 0.6, 0.8), d.uniform(0, 0.12))


def _background(d: _Draws) -> Image.Image:
    first = _hsv(d.uniform(), d.uniform(0.05, 0.6), d.uniform(0.35, 0.97))
    kind = d.pick(3)  # flat, vertical gradient, radial vignette
    if kind == 0:
        return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), first)
    second = _mix(first, _hsv(d.uniform(), d.uniform(0.1, 0.7), d.uniform(0.2, 1.0)), 0.7)
    mask = _VERTICAL if kind == 1 else _RADIAL
    return Image.composite(
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), second),
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), first),
        mask,
    )


def _draw_person(d: _Draws) -> Image.Image:  # noqa: C901 - one straight-line recipe
    """Draw head, hair, features and shoulders upright at 4x on a transparent layer."""
    layer = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    skin = _skin(d)
    shade = _mix(skin, (40, 20, 10), 0.28)
    if d.chance(0.08):
        hair = _DYED_HAIR[d.pick(len(_DYED_HAIR))]
    else:
        hair = _HAIR_COLORS[d.pick(len(_HAIR_COLORS))]
    style = _HAIR_STYLES[d.pick(len(_HAIR_STYLES))]

    cx, cy = 128.0, 118.0
    rx, ry = d.uniform(50, 66), d.uniform(62, 80)
    top, chin = cy - ry, cy + ry

    # Long hair and volume sit behind everything else.
    if style == "long":
        reach = chin + d.uniform(10, 60)
        draw.rounded_rectangle(
            (cx - rx - 12, top - 10, cx + rx + 12, reach), radius=int(rx * 0.8), fill=hair
        )
    elif style == "bob":
        draw.ellipse((cx - rx - 16, top - 14, cx + rx + 16, chin - 8), fill=hair)
    elif style == "curly":
        puff = rx * d.uniform(0.28, 0.4)
        for k in range(11):
            a = math.pi * (0.95 + k * 1.1 / 10)
            px, py = cx + (rx + 4) * math.cos(a), cy - 10 + (ry + 2) * math.sin(a)
            draw.ellipse((px - puff, py - puff, px + puff, py + puff), fill=hair)
    elif style == "bun":
        bun = rx * d.uniform(0.35, 0.5)
        draw.ellipse((cx - bun, top - 1.6 * bun, cx + bun, top + 0.4 * bun), fill=hair)

    # Shoulders run past the canvas so pose offsets never show an edge.
    shirt = _hsv(d.uniform(), d.uniform(0.2, 0.8), d.uniform(0.25, 0.9))
    width = rx * d.uniform(1.7, 2.3)
    draw.ellipse((cx - width, chin + 22, cx + width, chin + 260), fill=shirt)
    draw.rectangle((cx - rx * 0.42, cy + ry * 0.5, cx + rx * 0.42, chin + 34), fill=shade)
    if d.chance(0.5):  # a collar
        draw.polygon(
            [(cx - rx * 0.5, chin + 26), (cx, chin + 56), (cx + rx * 0.5, chin + 26)], fill=shade
        )

    ear_y = cy + ry * 0.02
    for side in (-1, 1):
        ex = cx + side * rx * 0.96
        draw.ellipse((ex - 11, ear_y - 17, ex + 11, ear_y + 17), fill=skin, outline=shade, width=3)
    if d.chance(0.18):  # earrings
        metal = (232, 196, 80) if d.chance(0.5) else (200, 204, 212)
        for side in (-1, 1):
            ex = cx + side * rx * 0.98
            draw.ellipse((ex - 5, ear_y + 16, ex + 5, ear_y + 26), fill=metal)

    draw.ellipse((cx - rx, top, cx + rx, chin), fill=skin, outline=shade, width=3)

    # A slight head turn: features slide sideways inside the oval.
    turn = d.uniform(-0.12, 0.12) * rx
    fx = cx + turn

    if d.chance(0.15):  # beard or moustache, drawn before the mouth
        if d.chance(0.6):
            draw.chord((cx - rx, cy - ry * 0.6, cx + rx, chin + 4), 20, 160, fill=hair)
        draw.ellipse((fx - rx * 0.38, cy + ry * 0.33, fx + rx * 0.38, cy + ry * 0.48), fill=hair)

    # Front hair over the forehead.
    hairline = cy - ry * d.uniform(0.42, 0.65)
    cap = (cx - rx - 6, top - 12, cx + rx + 6, 2 * hairline - top + 12)
    if style in ("short", "long", "bob", "curly", "bun"):
        draw.chord(cap, 180, 360, fill=hair)
        if style in ("long", "bob") and d.chance(0.5):  # a parting
            px = cx + d.uniform(-0.4, 0.4) * rx
            draw.line((px, top - 6, px + 4, hairline - 14), fill=_mix(hair, skin, 0.35), width=4)
    elif style == "fringe":
        draw.chord(cap, 180, 360, fill=hair)
        low = cy - ry * d.uniform(0.3, 0.42)
        draw.chord((cx - rx, top - 4, cx + rx, 2 * low - top + 4), 185, 355, fill=hair)
    elif style == "mohawk":
        w = rx * d.uniform(0.15, 0.3)
        draw.ellipse((cx - w, top - 28, cx + w, hairline + 10), fill=hair)
    elif style == "cap":
        hat = _hsv(d.uniform(), d.uniform(0.4, 0.9), d.uniform(0.3, 0.9))
        draw.chord(cap, 180, 360, fill=hat)
        brim = cx + (rx * 0.35 if d.chance(0.5) else -rx * 0.35)
        draw.ellipse((brim - rx * 0.9, hairline - 10, brim + rx * 0.9, hairline + 10), fill=hat)
    elif d.chance(0.5):  # bald on top, hair at the sides
        for side in (-1, 1):
            sx = cx + side * rx * 0.86
            draw.ellipse((sx - 12, cy - ry * 0.5, sx + 12, cy + ry * 0.05), fill=hair)

    # Eyes.
    eye_y = cy - ry * d.uniform(0.02, 0.16)
    spacing = rx * d.uniform(0.34, 0.46)
    ew = rx * d.uniform(0.13, 0.21)
    eh = ew * d.uniform(0.6, 0.95)
    iris = _EYE_COLORS[d.pick(len(_EYE_COLORS))]
    gaze_x, gaze_y = d.uniform(-0.3, 0.3) * ew, d.uniform(-0.15, 0.15) * eh
    closed = d.chance(0.06)
    brow = _mix(hair, (20, 15, 10), 0.3) if style != "none" else _mix(shade, (20, 15, 10), 0.3)
    brow_lift, brow_tilt = eh + d.uniform(6, 18), d.uniform(-7, 7)
    brow_w = int(d.uniform(4, 10))
    for side in (-1, 1):
        ex = fx + side * spacing
        if closed:
            draw.arc((ex - ew, eye_y - eh, ex + ew, eye_y + eh), 20, 160, fill=(40, 25, 20), width=4)
        else:
            draw.ellipse((ex - ew, eye_y - eh, ex + ew, eye_y + eh), fill=(250, 250, 246))
            ir = eh * 0.85
            ix, iy = ex + gaze_x, eye_y + gaze_y
            draw.ellipse((ix - ir, iy - ir, ix + ir, iy + ir), fill=iris)
            pr = ir * 0.5
            draw.ellipse((ix - pr, iy - pr, ix + pr, iy + pr), fill=(15, 10, 10))
            draw.ellipse((ix - pr + 3, iy - pr, ix - pr + 9, iy - pr + 6), fill=(255, 255, 255))
            draw.arc((ex - ew, eye_y - eh, ex + ew, eye_y + eh), 190, 350, fill=shade, width=4)
        by = eye_y - brow_lift
        draw.line(
            (ex - ew * 1.1, by + side * brow_tilt, ex + ew * 1.1, by - side * brow_tilt),
            fill=brow,
            width=brow_w,
        )

    # Nose.
    ny = cy + ry * d.uniform(0.15, 0.28)
    nw = rx * d.uniform(0.1, 0.18)
    nose = d.pick(3)
    if nose == 0:
        draw.arc((fx - nw, ny - nw, fx + nw, ny + nw), 20, 160, fill=shade, width=4)
    elif nose == 1:
        for side in (-1, 1):
            draw.ellipse((fx + side * nw * 0.6 - 3, ny - 3, fx + side * nw * 0.6 + 3, ny + 3), fill=shade)
    else:
        draw.line((fx, eye_y + eh, fx - nw * 0.6, ny, fx + nw * 0.3, ny), fill=shade, width=4)

    # Mouth.
    my = cy + ry * d.uniform(0.47, 0.6)
    mw = rx * d.uniform(0.25, 0.5)
    lip = _mix(skin, (170, 40, 50), d.uniform(0.35, 0.7))
    mouth = d.pick(4)
    if mouth == 0:  # smile
        draw.arc((fx - mw, my - mw * 0.7, fx + mw, my + mw * 0.3), 20, 160, fill=lip, width=6)
    elif mouth == 1:  # neutral
        draw.line((fx - mw * 0.8, my, fx + mw * 0.8, my), fill=lip, width=6)
    elif mouth == 2:  # open grin with teeth
        box = (fx - mw, my - mw * 0.6, fx + mw, my + mw * 0.6)
        draw.chord(box, 0, 180, fill=(90, 20, 30))
        draw.rectangle((fx - mw * 0.8, my, fx + mw * 0.8, my + mw * 0.15), fill=(246, 244, 236))
        draw.arc(box, 0, 180, fill=lip, width=5)
        draw.line((fx - mw, my, fx + mw, my), fill=lip, width=5)
    else:  # surprised "o"
        mr = mw * 0.35
        draw.ellipse((fx - mr, my - mr * 1.2, fx + mr, my + mr * 1.2), fill=(90, 20, 30), outline=lip, width=4)

    if d.chance(0.3):  # blush
        tint = _mix(skin, (235, 110, 120), 0.35)
        for side in (-1, 1):
            bx, by = fx + side * rx * 0.55, cy + ry * 0.3
            draw.ellipse((bx - 12, by - 7, bx + 12, by + 7), fill=tint)

    if d.chance(0.28):  # glasses
        frame = _hsv(d.uniform(), d.uniform(0, 0.8), d.uniform(0.05, 0.6))
        shades = d.chance(0.2)
        round_frames = d.chance(0.5)
        gr = ew * 1.45
        for side in (-1, 1):
            gx = fx + side * spacing
            box = (gx - gr, eye_y - gr * 0.8, gx + gr, eye_y + gr * 0.8)
            fill = (25, 25, 35) if shades else None
            if round_frames:
                draw.ellipse(box, fill=fill, outline=frame, width=5)
            else:
                draw.rounded_rectangle(box, radius=8, fill=fill, outline=frame, width=5)
            draw.line((gx + side * gr, eye_y - 4, cx + side * rx * 0.97, ear_y - 4), fill=frame, width=4)
        draw.line((fx - spacing + gr, eye_y - 4, fx + spacing - gr, eye_y - 4), fill=frame, width=5)

    return layer


def render_face(index: int, seed: int = 0) -> np.ndarray:
    """Draw face ``index`` of dataset ``seed``: uint8 (64, 64, 3) HWC, same bytes every call."""
    d = _Draws(np.random.default_rng([seed, index]))
    background = _background(d)
    person = _draw_person(d)
    # Pose: a small tilt, shift and zoom as one affine map (output -> input pixel).
    angle = math.radians(d.uniform(-12, 12))
    zoom = d.uniform(0.88, 1.1)
    shift_x, shift_y = d.uniform(-14, 14), d.uniform(-10, 12)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    centre = _CANVAS / 2
    ox, oy = centre + shift_x, centre + shift_y
    matrix = (
        cos,
        sin,
        centre - cos * ox - sin * oy,
        -sin,
        cos,
        centre + sin * ox - cos * oy,
    )
    person = person.transform(
        (_CANVAS, _CANVAS), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR
    )
    small = person.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    background = background.convert("RGBA")
    background.alpha_composite(small)
    return np.array(background.convert("RGB"), dtype=np.uint8)


class BuiltinFaces:
    """``size`` cartoon faces drawn on demand; the image source used when none is given."""

    def __init__(self, size: int = 20_000, seed: int = 0) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.size = size
        self.seed = seed

    def __len__(self) -> int:
        """Number of images in the dataset."""
        return self.size

    @property
    def name(self) -> str:
        """Stable identifier, e.g. ``builtin-faces-20000-seed0``."""
        return f"builtin-faces-{self.size}-seed{self.seed}"

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Render ``indices`` in the given order as uint8 (N, 3, 64, 64)."""
        images = np.empty((len(indices), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for row, raw in enumerate(indices):
            index = operator.index(raw)
            if not 0 <= index < self.size:
                raise IndexError(f"image index {index} out of range for {self.name}")
            images[row] = render_face(index, self.seed)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
