"""SegEvery on large images, tile by tile: each object once, whole, under one id.

The geometry is tested with a perfect detector (the true boxes inside the tile it is
given, from thresholding) and a perfect decoder (the bright pixels inside each box), so
the label image must equal the ground truth exactly; the real model (random weights)
is run on a smaller tiled image for the structure of its result.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import ellipse
from skimage.measure import label, regionprops

from napari_mobilesam.imaging.label_canvas import Candidate, LabelCanvas
from napari_mobilesam.imaging.tiling import TileGrid
from napari_mobilesam.segevery import candidates as mask_candidates
from napari_mobilesam.segevery import pipeline as segevery
from napari_mobilesam.segevery.box_decoders import load_box_decoder
from napari_mobilesam.segevery.options import SegEveryOptions


def ellipses_on_noise(shape, count, seed, radii=(5, 14), big=()):
    """A uint16 image of bright ellipses on dim noise, and the true label image."""
    rng = np.random.default_rng(seed)
    image = rng.normal(300, 40, shape).clip(0, None)
    truth = np.zeros(shape, np.int32)
    n = 0
    wanted = [
        (
            int(rng.integers(20, shape[0] - 20)),
            int(rng.integers(20, shape[1] - 20)),
            *rng.integers(*radii, size=2),
        )
        for _ in range(count)
    ]
    for r, c, a, b in [*big, *wanted]:
        rr, cc = ellipse(r, c, a, b, shape)
        grown_r, grown_c = ellipse(r, c, a + 3, b + 3, shape)
        if truth[grown_r, grown_c].any():
            continue  # keep objects apart, so that thresholding finds each one alone
        n += 1
        truth[rr, cc] = n
        image[rr, cc] = 3000
    return image.astype(np.uint16), truth


def perfect_detector(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of the bright objects inside the tile it is given."""
    props = regionprops(label(rgb[..., 0] > 128))
    boxes = np.array([[p.bbox[1], p.bbox[0], p.bbox[3], p.bbox[2]] for p in props], np.float32)
    return boxes.reshape(-1, 4), np.linspace(1, 0.5, len(boxes), dtype=np.float32)


class RecordingPredictor:
    """Stands in for SegAnyPredictor: remembers the tile it was given, encodes nothing."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def set_image(self, rgb: np.ndarray) -> None:
        self.images.append(rgb)

    def has_embedding(self, key: str) -> bool:
        return False


@pytest.fixture
def perfect_decoder(monkeypatch):
    """Decode each box as the bright pixels inside it, and record every box decoded."""
    decoded: list[np.ndarray] = []

    def candidates(predictor, boxes, progress, decoder=None):
        rgb = predictor.images[-1]
        for index, box in enumerate(np.round(boxes).astype(int)):
            x0, y0, x1, y1 = box
            decoded.append(box)
            mask = rgb[y0:y1, x0:x1, 0] > 128
            yield Candidate(index, int(y0), int(x0), mask, 0.9, box.astype(np.float32))

    monkeypatch.setattr(mask_candidates, "box_candidates", candidates)
    return decoded


def assert_same_objects(labels: np.ndarray, truth: np.ndarray) -> None:
    """Each true object is exactly one label, and each label exactly one true object."""
    assert labels.max() == truth.max()
    np.testing.assert_array_equal(np.unique(labels), np.arange(truth.max() + 1))
    pairs = np.unique(np.stack([truth.ravel(), labels.ravel()]), axis=1)
    assert pairs.shape[1] == truth.max() + 1  # a one-to-one map, background to background


def test_each_object_is_decoded_once_and_whole_across_seams(perfect_decoder):
    # Two objects larger than the halo straddle seams; about 1500 small ones everywhere.
    big = [(760, 1000, 60, 300), (1500, 1536, 280, 50)]
    image, truth = ellipses_on_noise((3000, 4500), 1700, seed=0, big=big)
    grid = TileGrid(image.shape, 768, 128)
    corners = np.array(
        [[p.bbox[1], p.bbox[0], p.bbox[3] - 1, p.bbox[2] - 1] for p in regionprops(truth)]
    )
    first = grid.owners(corners[:, [0, 1, 0, 1]])
    last = grid.owners(corners[:, [2, 3, 2, 3]])
    assert truth.max() > 1300 and (first != last).sum() > 20  # many objects straddle seams

    result = segevery.segment_everything(
        image,
        predictor=RecordingPredictor(),
        detector=perfect_detector,
        decoder="mobile_sam",
        max_objects=1000,
    )

    assert result.labels.shape == image.shape
    assert len(perfect_decoder) == truth.max()  # each object decoded exactly once
    assert_same_objects(result.labels, truth)
    # Features: each object's box, in full-image pixels.
    found = {p.label: p.bbox for p in regionprops(result.labels)}
    expected = np.array(
        [[found[n][1], found[n][0], found[n][3], found[n][2]] for n in sorted(found)]
    )
    np.testing.assert_array_equal(result.boxes, expected)
    np.testing.assert_array_equal(result.areas, np.bincount(result.labels.ravel())[1:])
    assert 12 <= result.tiles_encoded <= len(grid) + 2


def test_object_larger_than_any_tile_is_decoded_on_a_coarser_view(perfect_decoder):
    image, truth = ellipses_on_noise((2000, 2000), 40, seed=1, big=[(1000, 1000, 700, 650)])
    predictor = RecordingPredictor()

    result = segevery.segment_everything(
        image, predictor=predictor, detector=perfect_detector, decoder="mobile_sam"
    )

    assert_same_objects(result.labels, truth)
    assert "coarser view" in result.message
    assert max(max(rgb.shape[:2]) for rgb in predictor.images) > 1024


def test_one_tile_run_equals_the_untiled_run(predictor):
    image, _ = ellipses_on_noise((700, 900), 25, seed=2)
    untiled = segevery.segment_everything(
        image, predictor=predictor, detector=perfect_detector, decoder="mobile_sam", tiling=False
    )
    grid = TileGrid(image.shape, 1024, 0)
    assert grid.is_single
    options = SegEveryOptions(detector=perfect_detector, decoder="mobile_sam")
    call = segevery._Call(options, load_box_decoder("mobile_sam"), None, None, None)
    tiled = segevery._segment_tiled(image, grid, predictor, call, out=None)

    assert untiled.n_objects > 10
    np.testing.assert_array_equal(tiled.labels, untiled.labels)
    np.testing.assert_array_equal(tiled.boxes, untiled.boxes)
    np.testing.assert_allclose(tiled.scores, untiled.scores)


def test_small_image_gives_todays_result_whatever_the_tile_settings(predictor):
    image, _ = ellipses_on_noise((600, 800), 12, seed=3)
    reference = segevery.segment_everything(
        image, predictor=predictor, detector=perfect_detector, decoder="mobile_sam", tiling=False
    )
    for tile_shape, halo in [(768, 128), (256, 64), (64, 0)]:
        result = segevery.segment_everything(
            image,
            predictor=predictor,
            detector=perfect_detector,
            decoder="mobile_sam",
            tile_shape=tile_shape,
            halo=halo,
        )
        np.testing.assert_array_equal(result.labels, reference.labels)
        assert result.tiles_encoded == 1


def test_dask_and_zarr_inputs_and_a_zarr_output_written_tile_by_tile(perfect_decoder):
    import dask.array as da
    import zarr

    image, truth = ellipses_on_noise((1800, 2100), 200, seed=4)
    source = zarr.create_array(store={}, shape=image.shape, chunks=(512, 512), dtype=image.dtype)
    source[:] = image
    reference = segevery.segment_everything(
        image, predictor=RecordingPredictor(), detector=perfect_detector, decoder="mobile_sam"
    )
    assert_same_objects(reference.labels, truth)

    class RecordingZarr:
        """A zarr array that records the size of every write."""

        def __init__(self, array) -> None:
            self.array, self.writes = array, []
            self.shape, self.dtype = array.shape, array.dtype

        def __getitem__(self, key):
            return self.array[key]

        def __setitem__(self, key, value) -> None:
            self.writes.append(np.shape(value))
            self.array[key] = value

    out = RecordingZarr(
        zarr.create_array(store={}, shape=image.shape, chunks=(512, 512), dtype=np.int32)
    )
    for lazy in (da.from_array(image, chunks=(600, 700)), source):
        result = segevery.segment_everything(
            lazy,
            predictor=RecordingPredictor(),
            detector=perfect_detector,
            decoder="mobile_sam",
            out=out if lazy is source else None,
        )
        np.testing.assert_array_equal(np.asarray(result.labels[:]), reference.labels)
    assert result.labels is out
    painting = [shape for shape in out.writes if shape != image.shape]
    assert painting and all(h * w <= 1024 * 1024 for h, w in painting)


def test_real_model_on_a_tiled_image(predictor):
    image, _ = ellipses_on_noise((1100, 1300), 40, seed=5)
    steps = []

    result = segevery.segment_everything(
        image,
        predictor=predictor,
        detector=perfect_detector,
        decoder="mobile_sam",
        progress=lambda done, total: steps.append((done, total)),
    )

    assert result.tiles_encoded == 4
    assert result.labels.shape == image.shape and result.labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(result.labels), np.arange(result.n_objects + 1))
    assert (result.boxes[:, 2] <= 1300).all() and (result.boxes[:, 3] <= 1100).all()
    assert steps[-1][0] == steps[-1][1] == 8  # 4 tiles discovered, 4 decoded
    assert set(result.timings) == {"discovery", "embedding", "decoding"}


def test_cancel_between_tiles(perfect_decoder):
    image, _ = ellipses_on_noise((1800, 1800), 50, seed=6)

    def cancel_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segevery.segment_everything(
            image,
            predictor=RecordingPredictor(),
            detector=perfect_detector,
            decoder="mobile_sam",
            progress=cancel_after_two,
        )
    assert len(perfect_decoder) == 0  # stopped during discovery, nothing decoded


def test_bad_tile_settings_and_levels_are_clear_errors():
    image = np.zeros((2000, 2000), np.uint16)
    with pytest.raises(ValueError, match="at most half the tile"):
        segevery.segment_everything(image, detector=perfect_detector, tile_shape=256, halo=200)
    with pytest.raises(ValueError, match="level 1 does not exist"):
        segevery.segment_everything(image, detector=perfect_detector, level=1)
    with pytest.raises(ValueError, match="out must be"):
        segevery.segment_everything(
            image, detector=perfect_detector, out=np.zeros((10, 10), np.int32)
        )


def test_max_objects_applies_to_each_tiles_own_objects(perfect_decoder):
    image, truth = ellipses_on_noise((2000, 2000), 400, seed=8)
    grid = TileGrid(image.shape, 768, 128)
    props = regionprops(truth)
    owners = grid.owners(np.array([[p.bbox[1], p.bbox[0], p.bbox[3], p.bbox[2]] for p in props]))
    expected = sum(min(5, int((owners == i).sum())) for i in range(len(grid)))

    result = segevery.segment_everything(
        image,
        predictor=RecordingPredictor(),
        detector=perfect_detector,
        decoder="mobile_sam",
        max_objects=5,
    )

    # Halo boxes, which belong to the neighbours, do not use up a tile's quota.
    assert result.n_objects == expected == 5 * len(grid)


class CountingArray:
    """A lazy array stand-in that counts its reads and the pixels they return."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads = self.pixels = 0

    def __getitem__(self, key):
        region = self.array[key]
        self.reads += 1
        self.pixels += region.size
        return region


def test_a_lazy_image_is_read_once_and_each_tile_converted_and_hashed_once(
    perfect_decoder, conversions_and_hashes
):
    image, truth = ellipses_on_noise((2000, 2000), 40, seed=1, big=[(1000, 1000, 700, 650)])
    lazy = CountingArray(image)
    grid = TileGrid(image.shape, 768, 128)

    result = segevery.segment_everything(
        lazy,
        predictor=RecordingPredictor(),
        detector=perfect_detector,
        decoder="mobile_sam",
        contrast_limits=(0, 3000),
    )

    assert_same_objects(result.labels, truth)
    assert "coarser view" in result.message  # its input is made of the tiles in hand
    assert lazy.reads == len(grid)
    assert lazy.pixels == sum(tile.shape[0] * tile.shape[1] for tile in grid.tiles)
    assert conversions_and_hashes["converted"] == len(grid)
    assert conversions_and_hashes["hashed"] == len(grid) + 1  # + the coarse view


def test_tiles_kept_beyond_the_budget_are_read_again(perfect_decoder):
    from napari_mobilesam.segevery.tiled import TiledSegEvery

    image, truth = ellipses_on_noise((1800, 1800), 60, seed=9)
    lazy = CountingArray(image)
    grid = TileGrid(image.shape, 768, 128)
    canvas = LabelCanvas(grid.shape, 0)
    run = TiledSegEvery(
        lazy,
        grid,
        predictor=RecordingPredictor(),
        box_decoder=load_box_decoder("mobile_sam"),
        contrast_limits=(0, 3000),
        kept_input_bytes=0,
    )

    boxes, _ = run.discover(perfect_detector, 1000, 0.9)
    run.decode(boxes, canvas)
    canvas.finish()

    assert_same_objects(canvas.labels, truth)
    assert lazy.reads == len(grid) + run.tiles_encoded


def test_the_predictor_takes_a_model_input_as_it_is(predictor, conversions_and_hashes):
    from napari_mobilesam.imaging.prepared_input import model_input

    image, _ = ellipses_on_noise((96, 128), 3, seed=10)
    prepared = model_input(image, (0, 3000))
    assert conversions_and_hashes == {"converted": 1, "hashed": 1}

    predictor.precompute(prepared)
    predictor.set_image(prepared)
    assert predictor.is_cached(prepared) and predictor.current_key == prepared.key
    assert conversions_and_hashes == {"converted": 1, "hashed": 1}


def test_boxes_decoded_with_another_decoder_build_only_its_batched_decoder(predictor, monkeypatch):
    from napari_mobilesam.engines import decoder_choice
    from napari_mobilesam.model.prompt_decoder import PromptDecoder

    built = []
    batched = decoder_choice.BatchedMaskDecoder

    class CountingBatchedDecoder(batched):
        def __init__(self, mask_decoder, *args, **kwargs) -> None:
            built.append(mask_decoder)
            super().__init__(mask_decoder, *args, **kwargs)

    monkeypatch.setattr(decoder_choice, "BatchedMaskDecoder", CountingBatchedDecoder)
    image, _ = ellipses_on_noise((96, 128), 3, seed=11)
    prompt_guided = PromptDecoder()

    predictor.set_image(image)
    assert built == []
    boxes = np.array([[10, 10, 50, 50], [60, 20, 100, 70]], np.float32)
    found = list(mask_candidates.box_candidates(predictor, boxes, None, prompt_guided))
    assert len(found) == 2
    assert len(built) == 1 and built[0] is prompt_guided.mask_decoder
    predictor.decode_points(np.array([[20.0, 20.0]]))
    assert len(built) == 2 and built[1] is predictor.model.mask_decoder
