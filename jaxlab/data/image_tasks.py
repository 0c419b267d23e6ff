"""Generators of the synthetic image classification tasks, vectorised in NumPy.

Every generator maps `(rng, labels, split)` to float32 images of shape
`(N, 32, 32, 3)` in [0, 1]. The synthetic tasks draw both splits from the same
distribution and ignore `split`; `handwritten_digits` draws them from disjoint
source images. Coordinates are in pixels with pixel centres at
0.5, 1.5, ..., 31.5, and shapes are drawn from signed distances (positive
inside) with a one-pixel linear ramp for anti-aliasing. `images.py` adds pixel
noise, quantises to uint8 and caches the result.

The label of each task depends on one factor of variation (glyph identity,
shape, hue, orientation, count, position, texture), and the other factors are
drawn at random. An expert trained on one task therefore learns features that
the other tasks treat as nuisance, which makes merged experts interfere.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

import numpy as np

IMAGE_SIZE = 32
_GRID = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
_Y, _X = np.meshgrid(_GRID, _GRID, indexing="ij")  # (32, 32) pixel-centre coordinates.

# Fonts that matplotlib ships in mpl-data/fonts/ttf (DejaVu, STIX, Computer Modern).
GLYPH_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
    "cmtt10.ttf", "cmb10.ttf",
)
_GLYPH_CANVAS = 64  # Side of the square canvas, in pixels, on which glyph templates are centred.
_GLYPH_POINT_SIZE = 44  # At 72 dpi, so about 32 px digit height.

SHAPE_NAMES = ("circle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross",
               "semicircle", "ellipse")
COLOUR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta", "pink", "brown")
# Per colour: hue range in degrees, saturation range and value (brightness) range in HSV.
_COLOUR_HSV = {
    "red": ((-8, 8), (0.7, 1.0), (0.6, 1.0)),
    "orange": ((22, 34), (0.75, 1.0), (0.8, 1.0)),
    "yellow": ((50, 62), (0.7, 1.0), (0.8, 1.0)),
    "green": ((95, 140), (0.6, 1.0), (0.5, 0.95)),
    "cyan": ((175, 192), (0.6, 1.0), (0.7, 1.0)),
    "blue": ((215, 240), (0.7, 1.0), (0.6, 1.0)),
    "purple": ((262, 282), (0.6, 1.0), (0.5, 0.9)),
    "magenta": ((295, 320), (0.7, 1.0), (0.7, 1.0)),
    "pink": ((330, 350), (0.25, 0.45), (0.9, 1.0)),
    "brown": ((18, 35), (0.6, 1.0), (0.3, 0.5)),
}
TEXTURE_NAMES = ("checkerboard", "dots", "rings", "spokes", "white_noise", "blobs", "grid_lines", "waves",
                 "bricks", "gradient")
ORIENTATION_STEP_DEGREES = 18  # Ten orientation classes cover [0, 180) degrees.
POSITION_GRID = 3  # The position task uses a 3 x 3 grid of cells.
COUNT_GRID = 5  # Counted objects sit in distinct cells of a 5 x 5 grid, so they never overlap.

Generator = Callable[[np.random.Generator, np.ndarray, str], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ImageTaskDef:
    """One task of the image suite.

    Attributes:
        name: the task's name, used in cache paths and result tables.
        class_names: one name per label, in label order.
        description: one sentence on what the label encodes.
        generate: maps `(rng, labels int[N], split)` to float32 images (N, 32, 32, 3) in [0, 1],
            where split is "train" or "test".
        source: extra generator parameters that change the output, such as
            library versions used for rendering; recorded in the cache manifest.
    """

    name: str
    class_names: tuple[str, ...]
    description: str
    generate: Generator
    source: Callable[[], dict] = dict


# ---------------------------------------------------------------- shared drawing helpers


def _soft(distance: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] from a signed distance in pixels (positive inside), with a 1-pixel ramp."""
    return np.clip(distance + 0.5, 0.0, 1.0)


def _local_coordinates(cx, cy, angle):
    """Rotate the pixel grid into each object's frame: returns u, v of shape (N, 32, 32)."""
    dx = _X[None] - cx[:, None, None]
    dy = _Y[None] - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _polygon_distance(u, v, radius, sides):
    """Signed distance to a regular polygon with circumradius `radius`, exact inside each edge's sector."""
    sector = 2 * np.pi / sides
    theta = np.mod(np.arctan2(v, u), sector) - sector / 2
    apothem = radius * np.cos(np.pi / sides)
    return apothem - np.hypot(u, v) * np.cos(theta)


def shape_distance(kind: int, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Signed distance in pixels to shape `SHAPE_NAMES[kind]` of size `radius` (N,) in local coordinates."""
    r = radius[:, None, None]
    rho = np.hypot(u, v)
    name = SHAPE_NAMES[kind]
    if name == "circle":
        return r - rho

    if name == "ring":
        return 0.28 * r - np.abs(rho - 0.68 * r)

    if name in ("triangle", "square", "pentagon", "hexagon"):
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[name]
        return _polygon_distance(u, v, r, sides)

    if name == "star":
        # Five points. Each edge runs straight from an outer vertex (radius r)
        # to an inner one (0.42 r), and the radial gap approximates the distance.
        half = np.pi / 5
        t = np.mod(np.arctan2(v, u), 2 * half)
        t = np.where(t > half, 2 * half - t, t)
        outer, inner = r, 0.42 * r
        boundary = outer * inner * np.sin(half) / (outer * np.sin(t) + inner * np.sin(half - t))
        return 0.6 * (boundary - rho)

    if name == "cross":
        long, short = r, 0.34 * r
        bar_a = np.minimum(long - np.abs(u), short - np.abs(v))
        bar_b = np.minimum(short - np.abs(u), long - np.abs(v))
        return np.maximum(bar_a, bar_b)

    if name == "semicircle":
        # A disc cut by a chord 0.3 r from the centre, so the shape stays as wide as the others.
        return np.minimum(r - rho, v + 0.3 * r)

    if name == "ellipse":
        a, b = r, 0.45 * r
        return b * (1.0 - np.hypot(u / a, v / b))

    raise ValueError(f"Unknown shape index {kind}.")


def draw_shapes(kinds, cx, cy, radius, angle) -> np.ndarray:
    """Coverage (N, 32, 32) of one shape per image; all arguments have shape (N,)."""
    u, v = _local_coordinates(cx, cy, angle)
    coverage = np.zeros((len(kinds), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for kind in np.unique(kinds):
        rows = kinds == kind
        coverage[rows] = _soft(shape_distance(int(kind), u[rows], v[rows], radius[rows]))
    return coverage


def contrasting_colours(rng, n, polarity=None):
    """Draw foreground and background RGB colours (N, 3) whose channels differ by at least 0.2.

    Light colours have every channel in [0.6, 1] and dark ones in [0, 0.4].
    `polarity` is "dark_on_light", "light_on_dark" or None (random per image).
    """
    light = 0.6 + 0.4 * rng.random((n, 3), dtype=np.float32)
    dark = 0.4 * rng.random((n, 3), dtype=np.float32)
    if polarity == "dark_on_light":
        dark_foreground = np.ones(n, bool)
    elif polarity == "light_on_dark":
        dark_foreground = np.zeros(n, bool)
    else:
        dark_foreground = rng.random(n) < 0.5
    foreground = np.where(dark_foreground[:, None], dark, light)
    background = np.where(dark_foreground[:, None], light, dark)
    return foreground, background


def composite(coverage, foreground, background) -> np.ndarray:
    """Blend per-image colours (N, 3) by coverage (N, 32, 32) into images (N, 32, 32, 3)."""
    alpha = coverage[..., None]
    return background[:, None, None, :] * (1 - alpha) + foreground[:, None, None, :] * alpha


def _random_object_pose(rng, n, radius_range, margin=1.0):
    """Draw radius, centre (anywhere the object fits) and rotation for n objects."""
    radius = rng.uniform(*radius_range, size=n).astype(np.float32)
    low, high = radius + margin, IMAGE_SIZE - radius - margin
    cx = rng.uniform(low, high).astype(np.float32)
    cy = rng.uniform(low, high).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
    return radius, cx, cy, angle


# ---------------------------------------------------------------- glyphs (digits, letters)


def _matplotlib_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def glyph_renderer_source() -> dict:
    """Versions of the glyph renderer, which can change anti-aliasing from one release to the next."""
    import matplotlib
    from matplotlib import ft2font

    return {"matplotlib": matplotlib.__version__, "freetype": ft2font.__freetype_version__,
            "fonts": list(GLYPH_FONTS)}


@functools.lru_cache(maxsize=4)
def glyph_templates(characters: str) -> np.ndarray:
    """Render each character in each font of `GLYPH_FONTS`, centred on a 64 x 64 canvas.

    Returns:
        float32 coverage of shape (num_fonts, len(characters), 64, 64) in [0, 1].
    """
    from matplotlib import ft2font

    font_dir = _matplotlib_font_dir()
    templates = np.zeros((len(GLYPH_FONTS), len(characters), _GLYPH_CANVAS, _GLYPH_CANVAS), np.float32)
    for font_index, file_name in enumerate(GLYPH_FONTS):
        path = font_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(f"Font {path} is missing from this matplotlib installation; the glyph "
                                    "tasks need the fonts matplotlib ships (reinstall matplotlib).")
        font = ft2font.FT2Font(str(path))
        for char_index, character in enumerate(characters):
            font.set_size(_GLYPH_POINT_SIZE, 72)
            font.set_text(character)
            font.draw_glyphs_to_bitmap(antialiased=True)
            bitmap = np.asarray(font.get_image(), dtype=np.float32) / 255.0
            rows, cols = np.nonzero(bitmap > 0)
            if rows.size == 0:
                raise ValueError(f"Font {file_name} renders no ink for {character!r}.")
            ink = bitmap[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            height, width = ink.shape
            top, left = (_GLYPH_CANVAS - height) // 2, (_GLYPH_CANVAS - width) // 2
            templates[font_index, char_index, top:top + height, left:left + width] = ink
    return templates


def sample_affine(templates, template_index, scale, angle, shear, shift):
    """Warp templates into 32 x 32 images by random affine maps, with bilinear interpolation.

    Args:
        templates: float32 (K, S, S) coverage maps, centred.
        template_index: int (N,) which template each image uses.
        scale: (N,) output pixels per template pixel.
        angle: (N,) rotation in radians; shear: (N,) horizontal shear factor.
        shift: (N, 2) translation of the centre in output pixels (x, y).

    Returns:
        float32 coverage (N, 32, 32); outside the template it is 0.
    """
    num_templates, side, _ = templates.shape
    padded = np.pad(templates, ((0, 0), (1, 1), (1, 1)))  # A zero border makes out-of-range reads 0.
    flat = padded.reshape(-1)
    stride = side + 2

    # Forward map: template -> output is scale * rotation @ shear. Invert it per image.
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.stack([
        np.stack([cos, cos * shear - sin], -1),
        np.stack([sin, sin * shear + cos], -1),
    ], -2) * scale[:, None, None]
    inverse = np.linalg.inv(forward).astype(np.float32)  # (N, 2, 2)

    centre = IMAGE_SIZE / 2
    dx = _X[None] - centre - shift[:, 0, None, None]
    dy = _Y[None] - centre - shift[:, 1, None, None]
    tx = inverse[:, 0, 0, None, None] * dx + inverse[:, 0, 1, None, None] * dy + side / 2
    ty = inverse[:, 1, 0, None, None] * dx + inverse[:, 1, 1, None, None] * dy + side / 2

    # Template pixel centres sit at integer + 0.5; shift by the one-pixel border.
    px = np.clip(tx - 0.5 + 1, 0, stride - 1.001)
    py = np.clip(ty - 0.5 + 1, 0, stride - 1.001)
    x0, y0 = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    wx, wy = px - x0, py - y0
    base = template_index[:, None, None].astype(np.int64) * stride * stride
    top_left = flat[base + y0 * stride + x0]
    top_right = flat[base + y0 * stride + x0 + 1]
    bottom_left = flat[base + (y0 + 1) * stride + x0]
    bottom_right = flat[base + (y0 + 1) * stride + x0 + 1]
    top = top_left * (1 - wx) + top_right * wx
    bottom = bottom_left * (1 - wx) + bottom_right * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _glyph_task(characters: str, polarity: str) -> Generator:
    def generate(rng, labels, split):
        del split  # All splits come from the same distribution.
        templates = glyph_templates(characters)
        num_fonts = templates.shape[0]
        n = len(labels)
        font = rng.integers(0, num_fonts, size=n)
        index = font * len(characters) + labels
        # A glyph is about 32 template pixels tall, so scale 0.55-0.8 gives 18-26 px.
        scale = rng.uniform(0.55, 0.8, size=n)
        angle = np.deg2rad(rng.uniform(-20, 20, size=n))
        shear = rng.uniform(-0.25, 0.25, size=n)
        shift = rng.uniform(-4, 4, size=(n, 2))
        coverage = sample_affine(templates.reshape(-1, _GLYPH_CANVAS, _GLYPH_CANVAS), index, scale, angle,
                                 shear, shift)
        foreground, background = contrasting_colours(rng, n, polarity)
        return composite(coverage, foreground, background)

    return generate


# ---------------------------------------------------------------- shapes, colours, orientation


def _generate_shapes(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    radius, cx, cy, angle = _random_object_pose(rng, n, (6.0, 11.0))
    coverage = draw_shapes(labels, cx, cy, radius, angle)
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


def hsv_colours(rng, labels) -> np.ndarray:
    """Draw one RGB colour (N, 3) per label from the HSV ranges of `COLOUR_NAMES`."""
    from matplotlib.colors import hsv_to_rgb

    hsv = np.zeros((len(labels), 3), np.float32)
    for index, name in enumerate(COLOUR_NAMES):
        rows = labels == index
        hue, saturation, value = _COLOUR_HSV[name]
        count = int(rows.sum())
        hsv[rows, 0] = np.mod(rng.uniform(*hue, size=count), 360) / 360
        hsv[rows, 1] = rng.uniform(*saturation, size=count)
        hsv[rows, 2] = rng.uniform(*value, size=count)
    return hsv_to_rgb(hsv).astype(np.float32)


def _generate_colours(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    kinds = rng.integers(0, len(SHAPE_NAMES), size=n)
    radius, cx, cy, angle = _random_object_pose(rng, n, (7.0, 12.0))
    coverage = draw_shapes(kinds, cx, cy, radius, angle)
    # An achromatic background with a random linear brightness ramp, so only hue carries the label.
    level = rng.uniform(0.15, 0.85, size=n).astype(np.float32)
    ramp = rng.uniform(-0.15, 0.15, size=(n, 2)).astype(np.float32)
    grey = (level[:, None, None] + ramp[:, 0, None, None] * (_X[None] / IMAGE_SIZE - 0.5)
            + ramp[:, 1, None, None] * (_Y[None] / IMAGE_SIZE - 0.5))
    background = np.repeat(grey[..., None], 3, axis=-1)
    alpha = coverage[..., None]
    return background * (1 - alpha) + hsv_colours(rng, labels)[:, None, None, :] * alpha


def _generate_orientation(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    # Class k covers angles k * 18 +- 5 degrees, leaving a 8-degree gap between classes.
    angle = np.deg2rad(labels * ORIENTATION_STEP_DEGREES + rng.uniform(-5, 5, size=n))
    cycles = rng.uniform(2.0, 5.0, size=n)  # Periods per image width.
    phase = rng.uniform(0, 2 * np.pi, size=n)
    u, _ = _local_coordinates(np.full(n, IMAGE_SIZE / 2), np.full(n, IMAGE_SIZE / 2), angle)
    wave = np.sin(2 * np.pi * cycles[:, None, None] * u / IMAGE_SIZE + phase[:, None, None])
    coverage = (0.5 + 0.5 * wave).astype(np.float32)
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


# ---------------------------------------------------------------- counting, position


def _generate_counting(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    count = labels + 1
    cells = COUNT_GRID * COUNT_GRID
    cell = IMAGE_SIZE / COUNT_GRID
    # A random subset of `count` cells per image: the first `count` of a random permutation.
    order = np.argsort(rng.random((n, cells)), axis=1)
    radius = rng.uniform(1.5, 2.4, size=(n, cells)).astype(np.float32)
    # Jitter within the cell that keeps a gap of at least 2 px between neighbours.
    slack = cell / 2 - radius - 1.0
    jitter = rng.uniform(-1, 1, size=(n, cells, 2)) * slack[..., None]
    square = rng.random(n) < 0.5  # Discs or axis-aligned squares, one kind per image.

    coverage = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for slot in range(int(count.max())):
        rows = np.flatnonzero(slot < count)  # Images that have an object in this slot.
        cell_index = order[rows, slot]
        cx = (cell_index % COUNT_GRID + 0.5) * cell + jitter[rows, slot, 0]
        cy = (cell_index // COUNT_GRID + 0.5) * cell + jitter[rows, slot, 1]
        r = radius[rows, slot, None, None]
        dx = np.abs(_X[None] - cx[:, None, None].astype(np.float32))
        dy = np.abs(_Y[None] - cy[:, None, None].astype(np.float32))
        distance = np.where(square[rows, None, None], r - np.maximum(dx, dy), r - np.hypot(dx, dy))
        coverage[rows] = np.maximum(coverage[rows], _soft(distance))
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


def _generate_position(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    cell = IMAGE_SIZE / POSITION_GRID
    kinds = rng.integers(0, len(SHAPE_NAMES), size=n)
    radius = rng.uniform(3.0, 4.5, size=n).astype(np.float32)
    cx = (labels % POSITION_GRID + 0.5) * cell + rng.uniform(-1.5, 1.5, size=n)
    cy = (labels // POSITION_GRID + 0.5) * cell + rng.uniform(-1.5, 1.5, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    coverage = draw_shapes(kinds, cx.astype(np.float32), cy.astype(np.float32), radius, angle)
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


# ---------------------------------------------------------------- textures


def _texture_coverage(name, rng, n):
    """Coverage (n, 32, 32) of one texture class with random scale, rotation and phase."""
    angle = rng.uniform(0, np.pi, size=n)
    u, v = _local_coordinates(np.full(n, IMAGE_SIZE / 2), np.full(n, IMAGE_SIZE / 2), angle)
    period = rng.uniform(5.0, 10.0, size=n)[:, None, None]  # Pixels.
    phase = rng.uniform(0, 1, size=(n, 2))
    pu = u / period + phase[:, 0, None, None]
    pv = v / period + phase[:, 1, None, None]

    if name == "checkerboard":
        return _soft(period / 2 * np.sin(2 * np.pi * pu) * np.sin(2 * np.pi * pv))
    if name == "dots":
        du, dv = pu - np.floor(pu) - 0.5, pv - np.floor(pv) - 0.5
        return _soft(period * (0.28 - np.hypot(du, dv)))
    if name == "rings":
        centre = rng.uniform(6, 26, size=(n, 2))
        rho = np.hypot(_X[None] - centre[:, 0, None, None], _Y[None] - centre[:, 1, None, None])
        return _soft(period / 4 * np.sin(2 * np.pi * (rho / period + phase[:, 0, None, None])))
    if name == "spokes":
        centre = rng.uniform(8, 24, size=(n, 2))
        theta = np.arctan2(_Y[None] - centre[:, 1, None, None], _X[None] - centre[:, 0, None, None])
        spokes = rng.integers(5, 10, size=n)[:, None, None]
        return _soft(4 * np.sin(spokes * theta + 2 * np.pi * phase[:, 0, None, None]))
    if name == "white_noise":
        return (rng.random((n, IMAGE_SIZE, IMAGE_SIZE)) < 0.5).astype(np.float32)
    if name == "blobs":
        # A sum of six random low-frequency plane waves, thresholded at zero.
        field = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        for _ in range(6):
            direction = rng.uniform(0, 2 * np.pi, size=n)
            frequency = rng.uniform(0.6, 1.6, size=n) * 2 * np.pi / IMAGE_SIZE
            offset = rng.uniform(0, 2 * np.pi, size=n)
            projection = np.cos(direction)[:, None, None] * _X[None] + np.sin(direction)[:, None, None] * _Y[None]
            field += np.sin(frequency[:, None, None] * projection + offset[:, None, None])
        return _soft(3 * field)
    if name == "grid_lines":
        du = np.abs(pu - np.round(pu)) * period
        dv = np.abs(pv - np.round(pv)) * period
        return _soft(1.0 - np.minimum(du, dv))
    if name == "waves":
        amplitude = rng.uniform(0.3, 0.6, size=n)[:, None, None]
        return _soft(period / 4 * np.sin(2 * np.pi * (pu + amplitude * np.sin(2 * np.pi * pv / 2))))
    if name == "bricks":
        row = np.floor(pv)
        shifted = pu / 2 + 0.5 * np.mod(row, 2)  # Bricks twice as long as tall, alternate rows offset.
        mortar_u = np.abs(shifted - np.round(shifted)) * 2 * period
        mortar_v = np.abs(pv - np.round(pv)) * period
        return 1.0 - _soft(1.0 - np.minimum(mortar_u, mortar_v))
    if name == "gradient":
        return np.clip(u / IMAGE_SIZE + 0.5, 0.0, 1.0).astype(np.float32)
    raise ValueError(f"Unknown texture {name!r}.")


def _generate_textures(rng, labels, split):
    del split  # All splits come from the same distribution.
    n = len(labels)
    coverage = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for index, name in enumerate(TEXTURE_NAMES):
        rows = labels == index
        if rows.any():
            coverage[rows] = _texture_coverage(name, rng, int(rows.sum()))
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


# ---------------------------------------------------------------- scikit-learn handwritten digits


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's 1,797 8 x 8 handwritten digits as coverage in [0, 1] and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("The handwritten_digits task reads the UCI handwritten digits that scikit-learn "
                          "ships; install it with `pip install 'scikit-learn>=1.3'`.") from None
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


_SOURCE_SPLIT_SEED = 0  # Fixes which source images are held out, whatever the suite seed.
_HELD_OUT_FRACTION = 0.25


def _handwritten_digits_source() -> dict:
    _load_sklearn_digits()  # Raises the install hint when scikit-learn is missing.
    import sklearn

    return {"scikit-learn": sklearn.__version__, "source_split_seed": _SOURCE_SPLIT_SEED,
            "held_out_fraction": _HELD_OUT_FRACTION}


def _generate_handwritten_digits(rng, labels, split):
    """Draw coloured copies of scikit-learn digits under random affine maps.

    The splits draw from disjoint source images (a fixed 75/25 split of the
    1,797), so test images show handwriting never seen in training, not
    augmented copies of training images. The validation split draws from the
    held-out source images too, under its own random maps and colours.
    """
    images, targets = _load_sklearn_digits()
    permutation = np.random.default_rng(_SOURCE_SPLIT_SEED).permutation(len(images))
    num_test = int(len(images) * _HELD_OUT_FRACTION)
    sources = permutation[num_test:] if split == "train" else permutation[:num_test]
    n = len(labels)
    index = np.empty(n, np.int64)
    for digit in range(10):
        rows = labels == digit
        candidates = sources[targets[sources] == digit]
        index[rows] = rng.choice(candidates, size=int(rows.sum()))
    # 8 source pixels span 22-29 output pixels.
    scale = rng.uniform(2.8, 3.6, size=n)
    angle = np.deg2rad(rng.uniform(-12, 12, size=n))
    shear = rng.uniform(-0.15, 0.15, size=n)
    shift = rng.uniform(-2, 2, size=(n, 2))
    coverage = sample_affine(images, index, scale, angle, shear, shift)
    foreground, background = contrasting_colours(rng, n)
    return composite(coverage, foreground, background)


IMAGE_TASKS = {
    task.name: task
    for task in (
        ImageTaskDef("digits", tuple("0123456789"),
                     "printed digit 0-9, dark on light, from 15 fonts under random affine maps",
                     _glyph_task("0123456789", "dark_on_light"), glyph_renderer_source),
        ImageTaskDef("letters", tuple("ABCDEFGHIJ"),
                     "printed capital letter A-J, light on dark (inverted contrast), from 15 fonts under "
                     "random affine maps", _glyph_task("ABCDEFGHIJ", "light_on_dark"), glyph_renderer_source),
        ImageTaskDef("shapes", SHAPE_NAMES, "geometric shape at random size, position, rotation and colours",
                     _generate_shapes),
        ImageTaskDef("colours", COLOUR_NAMES, "hue name of a random shape on an achromatic background",
                     _generate_colours),
        ImageTaskDef("orientation", tuple(f"{k * ORIENTATION_STEP_DEGREES}deg" for k in range(10)),
                     "orientation of a sinusoidal grating in 18-degree steps, random frequency and phase",
                     _generate_orientation),
        ImageTaskDef("counting", tuple(str(k) for k in range(1, 11)),
                     "number (1-10) of discs or squares", _generate_counting),
        ImageTaskDef("position", tuple(f"row{r}_col{c}" for r in range(POSITION_GRID) for c in range(POSITION_GRID)),
                     "3 x 3 grid cell holding one small random shape", _generate_position),
        ImageTaskDef("textures", TEXTURE_NAMES, "procedural texture at random scale, rotation and colours",
                     _generate_textures),
        ImageTaskDef("handwritten_digits", tuple("0123456789"),
                     "scikit-learn's 8 x 8 UCI handwritten digits, upsampled under random affine maps "
                     "and colours (needs scikit-learn)", _generate_handwritten_digits,
                     _handwritten_digits_source),
    )
}
# The default eight tasks need only NumPy and matplotlib.
DEFAULT_IMAGE_TASKS = ("digits", "letters", "shapes", "colours", "orientation", "counting", "position",
                       "textures")
