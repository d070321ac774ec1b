import numpy as np
import pytest

from napari_mobilesam.imaging.convert import to_rgb_uint8


def ramp(shape: tuple[int, ...], dtype: type, start: float, stop: float) -> np.ndarray:
    """An image whose values go linearly from start to stop in C order."""
    return np.linspace(start, stop, int(np.prod(shape))).reshape(shape).astype(dtype)


def check_rgb(rgb: np.ndarray, height: int, width: int) -> None:
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags.c_contiguous


def test_rgb_uint8_passes_through_unchanged_as_a_copy():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    before = image.copy()
    rgb = to_rgb_uint8(image)
    check_rgb(rgb, 5, 7)
    np.testing.assert_array_equal(rgb, before)
    assert not np.shares_memory(rgb, image)
    rgb[0, 0] = 0
    np.testing.assert_array_equal(image, before)


def test_uint8_gray_is_not_rescaled_and_copied_to_three_channels():
    image = np.array([[10, 20], [30, 40]], dtype=np.uint8)
    rgb = to_rgb_uint8(image)
    check_rgb(rgb, 2, 2)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], image)


def test_uint8_with_contrast_limits_is_rescaled():
    image = np.array([[10, 20], [30, 40]], dtype=np.uint8)
    rgb = to_rgb_uint8(image, contrast_limits=(10, 40))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 85], [170, 255]])


def test_uint16_is_stretched_between_its_percentiles():
    image = ramp((100, 100), np.uint16, 1000, 3000)
    rgb = to_rgb_uint8(image)
    check_rgb(rgb, 100, 100)
    lo, hi = np.percentile(image, [0.1, 99.9])
    expected = np.rint(np.clip((image - lo) / (hi - lo) * 255, 0, 255))
    np.testing.assert_array_equal(rgb[..., 0], expected)
    assert rgb.min() == 0
    assert rgb.max() == 255


def test_int16_with_negative_values():
    image = np.array([[-1000, -500], [0, 1000]], dtype=np.int16)
    rgb = to_rgb_uint8(image, contrast_limits=(-1000, 1000))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 64], [128, 255]])
    stretched = to_rgb_uint8(image)
    assert stretched[0, 0, 0] == 0
    assert stretched[1, 1, 0] == 255


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("start", "stop"), [(-3.5e-4, 2e-4), (0.0, 1.0), (-7e6, 9e7)])
def test_float_of_any_range_fills_0_to_255(dtype, start, stop):
    image = ramp((64, 64), dtype, start, stop)
    rgb = to_rgb_uint8(image)
    check_rgb(rgb, 64, 64)
    assert rgb.min() == 0
    assert rgb.max() == 255
    # Monotonic: brighter input never gives a darker output.
    assert np.all(np.diff(rgb[..., 0].ravel().astype(int)) >= 0)


def test_bool_maps_false_to_0_and_true_to_255():
    image = np.zeros((4, 4), dtype=bool)
    image[1:3, 1:3] = True
    rgb = to_rgb_uint8(image)
    np.testing.assert_array_equal(rgb[..., 1], np.where(image, 255, 0))


def test_bool_with_a_single_true_pixel_keeps_it_visible():
    image = np.zeros((100, 100), dtype=bool)
    image[50, 50] = True
    rgb = to_rgb_uint8(image)
    assert rgb[50, 50, 0] == 255
    assert rgb.sum() == 3 * 255


def test_one_channel_is_gray():
    image = ramp((8, 9, 1), np.uint16, 0, 500)
    rgb = to_rgb_uint8(image)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_array_equal(rgb, to_rgb_uint8(image[..., 0]))


def test_two_channels_become_red_and_green_with_blue_zero():
    red = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    green = np.array([[255, 0], [0, 0]], dtype=np.uint8)
    rgb = to_rgb_uint8(np.stack([red, green], axis=-1))
    np.testing.assert_array_equal(rgb[..., 0], red)
    np.testing.assert_array_equal(rgb[..., 1], green)
    assert not rgb[..., 2].any()


def test_three_channels_keep_their_colour_balance():
    # One (lo, hi) for all channels: a dim channel stays dim next to a bright one.
    bright = ramp((50, 50), np.uint16, 0, 1000)
    dim = bright // 10
    rgb = to_rgb_uint8(np.stack([dim, bright, bright], axis=-1))
    assert rgb[..., 1].max() == 255
    assert rgb[..., 0].max() <= 27


def test_four_channels_drop_alpha():
    rgb_part = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    alpha = np.zeros((6, 5, 1), dtype=np.uint8)
    rgb = to_rgb_uint8(np.concatenate([rgb_part, alpha], axis=-1))
    check_rgb(rgb, 6, 5)
    np.testing.assert_array_equal(rgb, rgb_part)


def test_alpha_does_not_take_part_in_the_stretch():
    colour = ramp((10, 10, 3), np.float32, 0.0, 1.0)
    alpha = np.full((10, 10, 1), 1e6, dtype=np.float32)
    rgba = np.concatenate([colour, alpha], axis=-1)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), to_rgb_uint8(colour))


def test_contrast_limits_map_lo_to_0_and_hi_to_255_and_clip_outside():
    image = np.array([[50, 100, 150], [200, 250, 300]], dtype=np.uint16)
    rgb = to_rgb_uint8(image, contrast_limits=(100, 200))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 0, 128], [255, 255, 255]])


def test_contrast_limits_accept_any_pair_of_numbers():
    image = ramp((4, 4), np.float32, 0.0, 1.0)
    expected = to_rgb_uint8(image, contrast_limits=(0.0, 1.0))
    np.testing.assert_array_equal(to_rgb_uint8(image, contrast_limits=[0, 1]), expected)
    np.testing.assert_array_equal(
        to_rgb_uint8(image, contrast_limits=np.array([0.0, 1.0])), expected
    )


def test_a_few_hot_pixels_do_not_crush_the_range():
    image = ramp((200, 200), np.uint16, 100, 1100)
    image[:2, :5] = 65535
    rgb = to_rgb_uint8(image)
    assert rgb[..., 0].max() == 255
    assert np.median(rgb[..., 0]) == pytest.approx(127.5, abs=3)
    # Without the percentiles the middle of the range would sit near 255 * 600 / 65535 ~ 2.
    assert rgb[100, 100, 0] > 100


def test_a_few_bright_spots_on_a_flat_background_stay_visible():
    image = np.full((100, 100), 500, dtype=np.uint16)
    image[10, 10] = 900
    image[80, 30] = 700
    rgb = to_rgb_uint8(image)
    assert rgb[10, 10, 0] == 255
    assert rgb[80, 30, 0] == 128
    assert rgb[0, 0, 0] == 0


def test_nan_becomes_0_and_infinities_become_0_and_255():
    image = ramp((10, 10), np.float32, 1.0, 2.0)
    image[0, 0] = np.nan
    image[0, 1] = np.inf
    image[0, 2] = -np.inf
    rgb = to_rgb_uint8(image)
    assert rgb[0, 0, 0] == 0
    assert rgb[0, 1, 0] == 255
    assert rgb[0, 2, 0] == 0
    # The non-finite values do not enter the percentiles.
    lo, hi = np.percentile(image[np.isfinite(image)], [0.1, 99.9])
    assert rgb[5, 5, 0] == np.rint(255 * (image[5, 5] - lo) / (hi - lo))


def test_the_input_is_not_modified():
    image = ramp((10, 10), np.float32, -1.0, 1.0)
    image[0, 0] = np.nan
    before = image.copy()
    to_rgb_uint8(image)
    to_rgb_uint8(image, contrast_limits=(-0.5, 0.5))
    np.testing.assert_array_equal(image, before)


def test_non_contiguous_views_are_accepted():
    image = ramp((20, 30), np.uint16, 0, 1000)
    view = image.T[::2]
    rgb = to_rgb_uint8(view)
    check_rgb(rgb, 15, 20)
    np.testing.assert_array_equal(rgb, to_rgb_uint8(np.ascontiguousarray(view)))


def test_nested_lists_are_accepted():
    rgb = to_rgb_uint8([[0.0, 1.0], [2.0, 3.0]], contrast_limits=(0, 3))
    np.testing.assert_array_equal(rgb[..., 2], [[0, 85], [170, 255]])


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((10,), r"\(H, W\) or \(H, W, C\).*1 dimensions"),
        ((3, 10, 10, 3), r"4 dimensions.*image\[z\]"),
        ((10, 10, 5), r"C in 1\.\.4.*last axis 5.*image\[z\]"),
        ((10, 10, 0), r"last axis 0"),
        ((3, 10, 10), r"last axis 10.*np\.moveaxis"),
        ((1, 10), r"at least 2 x 2 pixels.*\(1, 10\)"),
        ((10, 1, 3), r"at least 2 x 2 pixels"),
    ],
)
def test_wrong_shapes_are_refused(shape, match):
    image = np.random.default_rng(0).random(shape)
    with pytest.raises(ValueError, match=match):
        to_rgb_uint8(image)


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 4), np.nan, dtype=np.float32),
        np.array([[np.nan, np.inf], [-np.inf, np.nan]]),
    ],
)
def test_an_image_without_finite_values_is_refused(image):
    with pytest.raises(ValueError, match="finite values"):
        to_rgb_uint8(image)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.full((4, 4, 3), 7, dtype=np.uint8),
        np.full((4, 4), 1000, dtype=np.uint16),
        np.ones((4, 4), dtype=bool),
        np.array([[1.5, np.nan], [1.5, 1.5]]),
    ],
)
@pytest.mark.parametrize("contrast_limits", [None, (0, 2000)])
def test_a_constant_image_is_refused(image, contrast_limits):
    with pytest.raises(ValueError, match="nothing to segment"):
        to_rgb_uint8(image, contrast_limits=contrast_limits)


@pytest.mark.parametrize(
    ("contrast_limits", "match"),
    [
        ((10, 10), r"hi > lo.*\(10\.0, 10\.0\)"),
        ((20, 10), r"hi > lo"),
        ((0, np.inf), r"finite"),
        ((np.nan, 1), r"finite"),
        ((0, 1, 2), r"two numbers"),
        (5, r"two numbers"),
        (("low", "high"), r"two numbers"),
    ],
)
def test_bad_contrast_limits_are_refused(contrast_limits, match):
    with pytest.raises(ValueError, match=match):
        to_rgb_uint8(ramp((4, 4), np.float32, 0, 1), contrast_limits=contrast_limits)


@pytest.mark.parametrize(
    "image",
    [
        np.array([["a", "b"], ["c", "d"]]),
        np.array([[1, 2], [3, 4]], dtype=object),
        np.array([[1j, 2], [3, 4]]),
    ],
)
def test_non_numeric_dtypes_are_refused(image):
    with pytest.raises(TypeError, match=f"received dtype {image.dtype}"):
        to_rgb_uint8(image)


def test_has_contrast_is_the_check_to_rgb_uint8_refuses_on():
    from napari_mobilesam.imaging.convert import has_contrast

    flat = np.full((4, 4), 7, np.uint16)
    only_nan = np.array([[np.nan, 2.0], [2.0, np.inf]])
    rgb_flat_but_alpha = np.zeros((4, 4, 4), np.uint8)
    rgb_flat_but_alpha[..., 3] = np.arange(16).reshape(4, 4)
    for image in (flat, only_nan, rgb_flat_but_alpha):
        assert not has_contrast(image)
        with pytest.raises(ValueError):
            to_rgb_uint8(image)
    assert has_contrast(np.eye(4)) and has_contrast(np.eye(4, dtype=bool))


def test_validate_contrast_limits_is_shared_by_tiles_and_stacks():
    from napari_mobilesam.imaging.convert import validate_contrast_limits
    from napari_mobilesam.segany.tiled import TiledSegAnyPredictor
    from napari_mobilesam.stacks.slices import StackSlices

    assert validate_contrast_limits((0, 10)) == (0.0, 10.0)
    message = r"finite with hi > lo"
    with pytest.raises(ValueError, match=message):
        validate_contrast_limits((5, 5))

    class Predictor:
        def set_image(self): ...
        def predict(self): ...
        def predict_boxes(self): ...

    with pytest.raises(ValueError, match=message):
        TiledSegAnyPredictor(Predictor()).set_image(np.eye(8), contrast_limits=(1, 0))
    with pytest.raises(ValueError, match=message):
        StackSlices(np.random.default_rng(2).random((3, 8, 8)), contrast_limits=(np.nan, 1))


def test_a_stack_has_the_display_range_of_its_sampled_slices():
    from napari_mobilesam.imaging.convert import display_range
    from napari_mobilesam.stacks.slices import StackSlices

    stack = np.random.default_rng(0).gamma(2.0, 100.0, (5, 40, 30)).astype(np.float32)
    slices = StackSlices(stack)
    assert slices.contrast_limits == display_range(stack.reshape(200, 30))
    assert StackSlices(stack.astype(np.uint8)).contrast_limits is None
    with pytest.raises(ValueError, match="stack with some contrast"):
        StackSlices(np.ones((3, 8, 8), np.float32))


def test_a_slice_is_converted_and_hashed_once():
    from napari_mobilesam.imaging.prepared_input import ModelInput, content_key
    from napari_mobilesam.stacks.slices import StackSlices

    stack = np.random.default_rng(1).random((3, 16, 16))
    stack[1] = 0.5
    slices = StackSlices(stack)
    prepared = slices.rgb_slice(0)
    assert isinstance(prepared, ModelInput)
    assert prepared.key == content_key(to_rgb_uint8(stack[0], slices.contrast_limits))
    assert content_key(prepared) == prepared.key
    assert slices.rgb_slice(1) is None, "a blank slice"
