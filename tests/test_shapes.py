"""ddpm_hub.shapes: the generated captioned shapes and the geometric prompt-adherence score."""

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from ddpm_hub.errors import InputError
from ddpm_hub.data.shapes import (
    BACKGROUND,
    COLOURS,
    SHAPES,
    AdherenceResult,
    generate_shapes,
    parse_prompt,
    predict_colour_and_shape,
    score_prompt_adherence,
    shape_mask,
)

NAMES = list(COLOURS)


def _nhwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def _degrade(images: torch.Tensor, blur: ImageFilter.Filter, seed: int = 0, std: float = 10.0) -> np.ndarray:
    """A 1-pixel blur, then Gaussian pixel noise of `std` (0..255 scale), rounded and clipped: uint8 NHWC."""
    rng = np.random.default_rng(seed)
    blurred = np.stack([np.asarray(Image.fromarray(image).filter(blur)) for image in _nhwc(images)])
    noisy = blurred.astype(np.float64) + rng.normal(0.0, std, blurred.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _assert_one_line(excinfo: pytest.ExceptionInfo) -> None:
    assert isinstance(excinfo.value, InputError) and "\n" not in str(excinfo.value)


def _closed_form_regions(shape: str, height: int, width: int, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(surely inside, surely outside), bool [height x width]: the pixel centres at least `margin` pixels inside
    or outside the continuous figure inscribed in the box, computed from its geometry, not from `shape_mask`.

    circle: the ellipse with centre (w/2, h/2) and semi-axes w/2, h/2 (scaling by 1/min(w/2, h/2) is the most a
    point's distance can grow, so |rho - 1| * min(w/2, h/2) is a lower bound on its distance to the ellipse,
    rho its normalised radius; exact for a disc). square: the whole box. triangle: apex (w/2, 0), base corners
    (0, h) and (w, h); the distance to the nearest edge line (exact inside, a lower bound outside).
    """
    y, x = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    if shape == "square":
        return np.ones((height, width), dtype=bool), np.zeros((height, width), dtype=bool)
    if shape == "circle":
        a, b = width / 2, height / 2
        signed = (np.hypot((x - a) / a, (y - b) / b) - 1) * min(a, b)  # > 0 outside
        return signed <= -margin, signed >= margin
    corners = np.array([(width / 2, 0.0), (0.0, height), (width, height)])
    distances = []
    for i in range(3):
        p, q, r = corners[i], corners[(i + 1) % 3], corners[(i + 2) % 3]
        normal = np.array([q[1] - p[1], p[0] - q[0]]) / math.dist(p, q)
        normal = normal if normal @ (r - p) > 0 else -normal  # pointing inwards
        distances.append(normal[0] * (x - p[0]) + normal[1] * (y - p[1]))
    inside = np.min(distances, axis=0)  # > 0 inside
    return inside >= margin, inside <= -margin


# ---------------------------------------------------------------------------------------------------------
# the palette and the dataset


def test_palette_colours_are_named_and_far_apart():
    assert list(COLOURS)[:6] == ["red", "green", "blue", "yellow", "purple", "orange"]
    assert SHAPES == ("circle", "square", "triangle")
    entries = [BACKGROUND, *COLOURS.values()]
    assert min(math.dist(a, b) for a, b in itertools.combinations(entries, 2)) >= 110
    assert min(BACKGROUND) >= 200  # a plain light background


def test_generate_shapes_is_deterministic_and_every_prefix_is_the_same():
    data = generate_shapes(40, resolution=32, seed=7)
    again = generate_shapes(40, resolution=32, seed=7)
    prefix = generate_shapes(15, resolution=32, seed=7)
    other = generate_shapes(40, resolution=32, seed=8)

    assert torch.equal(data.images, again.images) and data.captions == again.captions
    assert torch.equal(prefix.images, data.images[:15]) and prefix.captions == data.captions[:15]
    assert torch.equal(prefix.colours, data.colours[:15]) and torch.equal(prefix.shapes, data.shapes[:15])
    assert not torch.equal(other.images, data.images)


def test_generate_shapes_never_touches_the_global_rngs():
    np.random.seed(123)
    torch.manual_seed(123)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    generate_shapes(10)
    assert np.array_equal(np.random.get_state()[1], numpy_state) and torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_each_image_is_its_captioned_shape_on_the_background(resolution):
    data = generate_shapes(300, resolution=resolution, seed=1)

    assert data.images.shape == (300, 3, resolution, resolution) and data.images.dtype == torch.uint8
    assert data.colours.dtype == torch.int64 and data.shapes.dtype == torch.int64 and len(data) == 300
    smallest, largest = math.ceil(0.3 * resolution), math.floor(0.7 * resolution)
    sides = []
    for image, caption, c, s in zip(_nhwc(data.images), data.captions, data.colours, data.shapes):
        colour, shape = NAMES[c], SHAPES[s]
        assert caption == f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"
        painted = np.all(image == COLOURS[colour], axis=-1)
        assert np.all(painted | np.all(image == BACKGROUND, axis=-1))  # two values only: no antialiasing
        rows, cols = np.flatnonzero(painted.any(1)), np.flatnonzero(painted.any(0))
        side = len(rows)
        assert len(cols) == side and smallest <= side <= largest  # a square box inside the image
        assert rows[-1] - rows[0] + 1 == side and cols[-1] - cols[0] + 1 == side
        box = painted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        np.testing.assert_array_equal(box, shape_mask(shape, side, side))
        # the rasterised area against the closed form (pixel-centre sampling errs by about one perimeter row)
        area = {"circle": math.pi * side**2 / 4, "square": side**2, "triangle": side**2 / 2}[shape]
        assert abs(box.sum() - area) <= side + 1, (shape, side, box.sum(), area)
        sides.append(side)
    assert {smallest, largest} <= set(sides)  # both ends of the size range are drawn


def test_colours_shapes_and_positions_are_spread_evenly():
    data = generate_shapes(3000, resolution=32, seed=0)
    colour_counts = np.bincount(data.colours.numpy(), minlength=len(COLOURS))
    shape_counts = np.bincount(data.shapes.numpy(), minlength=len(SHAPES))
    assert np.all(np.abs(colour_counts - 500) < 80) and np.all(np.abs(shape_counts - 1000) < 110)
    painted = (data.images != torch.tensor(BACKGROUND, dtype=torch.uint8)[:, None, None]).any(1)  # N x H x W
    coverage = painted.float().mean(0)
    for edge in (coverage[0], coverage[-1], coverage[:, 0], coverage[:, -1]):
        assert edge.max() > 0.01  # shapes reach every side of the image
    assert coverage.max() < 0.7 and coverage.min() > 0.0  # the centre is covered most, not always


def test_ten_thousand_images_are_each_one_shape_and_start_with_the_small_set():
    """At dataset scale: every image holds exactly its caption's colour and the background, the captions
    agree with the label tensors, and the first images are those of a small run (per-image generators)."""
    data = generate_shapes(10_000, resolution=32)
    assert data.images.shape == (10_000, 3, 32, 32) and len(data.captions) == 10_000
    palette = torch.tensor([COLOURS[name] for name in NAMES], dtype=torch.uint8)
    painted = (data.images == palette[data.colours][:, :, None, None]).all(1)  # N x H x W
    background = (data.images == torch.tensor(BACKGROUND, dtype=torch.uint8)[:, None, None]).all(1)
    assert torch.all(painted ^ background)  # each pixel one or the other
    area = painted.sum(dim=(1, 2))
    assert area.min() >= 10 * 10 // 2 - 10 and area.max() <= 22 * 22  # between the smallest triangle, largest square
    assert data.captions == [f"{'an' if NAMES[c][0] in 'aeiou' else 'a'} {NAMES[c]} {SHAPES[s]}"
                             for c, s in zip(data.colours.tolist(), data.shapes.tolist())]
    assert torch.equal(generate_shapes(50, resolution=32).images, data.images[:50])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_images": 0}, "num_images 0 must be a positive integer"),
        ({"num_images": 2.5}, "num_images 2.5 must be a positive integer"),
        ({"num_images": True}, "num_images True must be a positive integer"),
        ({"num_images": 4, "resolution": 8}, "resolution 8 is too small for shapes: use at least 16"),
        ({"num_images": 4, "seed": -1}, "seed -1 must be a non-negative integer"),
    ],
)
def test_generate_shapes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match) as excinfo:
        generate_shapes(**kwargs)
    _assert_one_line(excinfo)


# ---------------------------------------------------------------------------------------------------------
# the score


@pytest.mark.parametrize("resolution, num_images, seeds", [(32, 600, (0, 1, 2)), (64, 200, (3,)), (16, 300, (4,))])
def test_score_is_exact_on_generated_shapes(resolution, num_images, seeds):
    """The scorer reads every generated image as its caption; the captions are first checked against the images
    with closed-form geometry (`_closed_form_regions`), since drawing and scoring share `shape_mask`."""
    for seed in seeds:
        data = generate_shapes(num_images, resolution=resolution, seed=seed)
        for image, c, s in zip(_nhwc(data.images), data.colours, data.shapes):
            painted = np.all(image == COLOURS[NAMES[c]], axis=-1)
            rows, cols = np.flatnonzero(painted.any(1)), np.flatnonzero(painted.any(0))
            box = painted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
            inside, outside = _closed_form_regions(SHAPES[s], *box.shape)
            assert box[inside].all() and not box[outside].any(), (seed, SHAPES[s], box.shape)
        result = score_prompt_adherence(data.images, data.captions)
        assert (result.accuracy, result.colour_accuracy, result.shape_accuracy) == (1.0, 1.0, 1.0), seed
        assert result.predicted == [(NAMES[c], SHAPES[s]) for c, s in zip(data.colours, data.shapes)]


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_mask_is_the_closed_form_figure(shape):
    """Every box the generator draws (square, 5..44 pixels) and the scorer's templates (aspect up to 4/3):
    the centres well inside the figure are in the mask, those well outside are not, and the mask's area is
    the figure's (pi/4, 1 or 1/2 of the box) up to the pixels its boundary crosses."""
    fraction = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}[shape]
    for height in range(5, 45):
        for width in sorted({height, height + 1, math.floor(height * 4 / 3)}):
            mask = shape_mask(shape, height, width)
            inside, outside = _closed_form_regions(shape, height, width)
            assert mask.shape == (height, width)
            assert mask[inside].all() and not mask[outside].any(), (shape, height, width)
            assert abs(mask.sum() - fraction * height * width) <= height + width, (shape, height, width)
            assert (~inside & ~outside).sum() <= 2 * (height + width)  # only a band along the boundary is open


def test_every_input_layout_gives_the_same_predictions():
    data = generate_shapes(30, resolution=32, seed=5)
    expected = [(NAMES[c], SHAPES[s]) for c, s in zip(data.colours, data.shapes)]
    uint8_nhwc = _nhwc(data.images)
    layouts = {
        "float NCHW [-1, 1]": data.images.float() / 127.5 - 1.0,
        "float NHWC [0, 1] (output_type='np')": uint8_nhwc.astype(np.float32) / 255.0,
        "uint8 NCHW": data.images,
        "uint8 NHWC": uint8_nhwc,
        "PIL list": [Image.fromarray(image) for image in uint8_nhwc],
    }
    for name, images in layouts.items():
        assert predict_colour_and_shape(images) == expected, name


def test_shapes_drawn_by_pil_are_recognised_too():
    # an independent rasteriser: PIL's ellipse, rectangle and polygon at several sizes and places
    images, prompts = [], []
    for i, (colour, shape, side) in enumerate(itertools.product(NAMES, SHAPES, (10, 15, 22))):
        picture = Image.new("RGB", (32, 32), BACKGROUND)
        draw = ImageDraw.Draw(picture)
        x, y = (3 * i) % (32 - side), (5 * i) % (32 - side)
        box = (x, y, x + side - 1, y + side - 1)
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            corners = [(x + (side - 1) / 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)]
            draw.polygon(corners, fill=COLOURS[colour])
        images.append(picture)
        prompts.append(f"a {colour} {shape}")
    assert score_prompt_adherence(images, prompts).accuracy == 1.0


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("blur", [ImageFilter.GaussianBlur(1), ImageFilter.BoxBlur(1)], ids=["gaussian", "box"])
def test_score_survives_mild_noise_and_a_one_pixel_blur(resolution, blur):
    data = generate_shapes(300, resolution=resolution, seed=11)
    degraded = _degrade(data.images, blur)
    assert np.abs(degraded.astype(int) - _nhwc(data.images)).max() > 60  # the blur and noise really bite
    result = score_prompt_adherence(degraded, data.captions)
    assert result.accuracy >= 0.95 and result.colour_accuracy >= 0.98, result.summary()


def test_blank_and_noise_images_are_misses():
    blank = np.full((4, 32, 32, 3), BACKGROUND, dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)
    faint_noise = _degrade(torch.from_numpy(blank).permute(0, 3, 1, 2), ImageFilter.BoxBlur(0))

    assert predict_colour_and_shape(blank) == [("none", "none")] * 4
    assert predict_colour_and_shape(noise) == [("none", "none")] * 20  # no dominant colour, so no shape
    assert predict_colour_and_shape(faint_noise) == [("none", "none")] * 4
    for prompt in ("a red square", "a yellow circle", "a blue triangle"):
        assert score_prompt_adherence(noise, prompt).accuracy == 0.0
        assert score_prompt_adherence(blank, prompt).accuracy == 0.0


def test_wrong_colour_scores_zero_for_colour_and_one_for_shape():
    data = generate_shapes(60, resolution=32, seed=2)
    wrong_colour = [f"a {NAMES[(c + 1) % len(NAMES)]} {SHAPES[s]}" for c, s in zip(data.colours, data.shapes)]
    wrong_shape = [f"a {NAMES[c]} {SHAPES[(s + 1) % len(SHAPES)]}" for c, s in zip(data.colours, data.shapes)]

    by_colour = score_prompt_adherence(data.images, wrong_colour)
    by_shape = score_prompt_adherence(data.images, wrong_shape)

    assert (by_colour.accuracy, by_colour.colour_accuracy, by_colour.shape_accuracy) == (0.0, 0.0, 1.0)
    assert (by_shape.accuracy, by_shape.colour_accuracy, by_shape.shape_accuracy) == (0.0, 1.0, 0.0)


def test_result_counts_each_kind_of_miss():
    data = generate_shapes(3, resolution=32, seed=3)
    blank = torch.full((1, 3, 32, 32), BACKGROUND[0], dtype=torch.uint8)
    images = torch.cat([data.images, blank])
    (c0, s0), (c1, s1), (c2, s2) = [(NAMES[c], SHAPES[s]) for c, s in zip(data.colours, data.shapes)]
    other = NAMES[(NAMES.index(c1) + 1) % len(NAMES)]
    prompts = [f"a {c0} {s0}", f"an {other} {s1}", f"a {c2} {s2}", "a red circle"]

    result = score_prompt_adherence(images, prompts)

    assert isinstance(result, AdherenceResult)
    assert result.correct == [True, False, True, False]
    assert (result.accuracy, result.colour_accuracy, result.shape_accuracy) == (0.5, 0.5, 0.75)
    assert result.predicted[3] == ("none", "none") and result.expected[1] == (other, s1)
    assert result.summary() == "prompt adherence 0.500 (colour 0.500, shape 0.750) over 4 images"


def test_shapes_that_match_no_template_are_none():
    pictures = [Image.new("RGB", (32, 32), BACKGROUND) for _ in range(4)]
    plus, ring, upside_down, diamond = (ImageDraw.Draw(p) for p in pictures)
    plus.rectangle((13, 4, 18, 27), fill=COLOURS["red"])
    plus.rectangle((4, 13, 27, 18), fill=COLOURS["red"])
    ring.ellipse((4, 4, 27, 27), outline=COLOURS["blue"], width=3)
    upside_down.polygon([(4, 4), (27, 4), (15.5, 27)], fill=COLOURS["yellow"])
    diamond.polygon([(16, 3), (29, 16), (16, 29), (3, 16)], fill=COLOURS["green"])  # a square turned by 45 degrees
    expected = [("red", "none"), ("blue", "none"), ("yellow", "none"), ("green", "none")]
    assert predict_colour_and_shape(pictures) == expected


def test_an_ellipse_is_not_a_circle_and_the_largest_shape_wins():
    picture = Image.new("RGB", (32, 32), BACKGROUND)
    ImageDraw.Draw(picture).ellipse((2, 10, 29, 21), fill=COLOURS["green"])  # 28 x 12
    assert predict_colour_and_shape([picture]) == [("green", "none")]

    picture = Image.new("RGB", (32, 32), BACKGROUND)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((1, 1, 4, 4), fill=COLOURS["red"])  # small red square
    draw.ellipse((10, 10, 29, 29), fill=COLOURS["blue"])  # large blue circle
    assert predict_colour_and_shape([picture]) == [("blue", "circle")]


# ---------------------------------------------------------------------------------------------------------
# prompts and inputs


def test_parse_prompt_finds_one_colour_and_one_shape():
    assert parse_prompt("a red circle") == ("red", "circle")
    assert parse_prompt("An ORANGE Triangle, centred.") == ("orange", "triangle")
    assert parse_prompt("square of purple on grey") == ("purple", "square")


@pytest.mark.parametrize(
    "prompt, match",
    [
        ("a circle", "names no known colour: name exactly one of red, green, blue, yellow, purple, orange"),
        ("a red blob", "names no known shape: name exactly one of circle, square, triangle"),
        ("a red and blue circle", r"names several colours \(red, blue\)"),
        ("a reddish circle", "names no known colour"),
        ("", "names no known colour"),
        (3, "must be a string"),
    ],
)
def test_parse_prompt_rejects_prompts_naming_no_or_several(prompt, match):
    with pytest.raises(InputError, match=match) as excinfo:
        parse_prompt(prompt)
    _assert_one_line(excinfo)


def test_one_prompt_string_applies_to_every_image_and_counts_must_match():
    data = generate_shapes(12, resolution=32, seed=9)
    first = data.captions[0]
    result = score_prompt_adherence(data.images, first)
    assert result.accuracy == sum(caption == first for caption in data.captions) / 12

    with pytest.raises(InputError, match="prompts: got 2 for 12 images") as excinfo:
        score_prompt_adherence(data.images, data.captions[:2])
    _assert_one_line(excinfo)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "3 colour channels"),
        (torch.full((2, 3, 32, 32), 2.0), r"must be in \[-1, 1\]"),
        ([np.zeros((32, 32, 3))], "a list must hold PIL images only"),
        ([Image.new("RGB", (32, 32)), Image.new("RGB", (16, 16))], "must share one size"),
        (torch.zeros(32, 32, 3), "must be a batch"),
    ],
)
def test_bad_image_inputs_are_input_errors(images, match):
    with pytest.raises(InputError, match=match) as excinfo:
        predict_colour_and_shape(images)
    _assert_one_line(excinfo)
