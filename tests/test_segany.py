"""SegAnyPredictor: the behaviour a user relies on besides numerical parity."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def encoder_calls(mobile_sam):
    """Counts image-encoder runs."""
    calls = []
    handle = mobile_sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    """A small uint16 fluorescence-like image: bright blobs on a dark, noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    image = rng.normal(300, 20, (96, 128))
    for cy, cx in [(30, 30), (60, 90), (70, 40)]:
        image += 3000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60)
    return image.astype(np.uint16)


def test_predict_before_set_image_is_a_clear_error(predictor):
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(point_coords=[[10, 10]], point_labels=[1])
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.get_image_embedding()


def test_same_image_reuses_embedding(predictor, nuclei, encoder_calls):
    predictor.set_image(nuclei)
    first = predictor.get_image_embedding()
    predictor.set_image(nuclei.copy())  # same content, another array
    assert len(encoder_calls) == 1
    assert predictor.get_image_embedding() is first


def test_contrast_change_recomputes_embedding(predictor, nuclei, encoder_calls):
    predictor.set_image(nuclei)
    predictor.set_image(nuclei, contrast_limits=(0, 1000))
    assert len(encoder_calls) == 2


def test_cache_is_bounded_lru(mobile_sam, nuclei, encoder_calls):
    from napari_mobilesam import SegAnyPredictor

    predictor = SegAnyPredictor(mobile_sam, device="cpu", cache_size=2)
    a, b, c = nuclei, nuclei[::-1].copy(), nuclei[:, ::-1].copy()
    for image in (a, b, a, c):  # a is used again before c, so b is dropped
        predictor.set_image(image)
    assert len(encoder_calls) == 3
    predictor.set_image(a)
    assert len(encoder_calls) == 3
    predictor.set_image(b)
    assert len(encoder_calls) == 4


def test_microscopy_image_gives_image_sized_masks(predictor, nuclei):
    predictor.set_image(nuclei)
    masks, scores, low_res = predictor.predict(point_coords=[[30, 30]], point_labels=[1])
    assert masks.shape == (3, 96, 128) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert low_res.shape == (3, 256, 256)
    single, _, _ = predictor.predict(box=[10, 10, 50, 50], multimask_output=False)
    assert single.shape == (1, 96, 128)


def test_refinement_with_mask_input_changes_logits(predictor, nuclei):
    predictor.set_image(nuclei)
    _, scores, low_res = predictor.predict(point_coords=[[30, 30]], point_labels=[1])
    best = low_res[np.argmax(scores)][None]
    _, _, refined = predictor.predict(
        point_coords=[[30, 30]], point_labels=[1], mask_input=best, multimask_output=False
    )
    _, _, unrefined = predictor.predict(
        point_coords=[[30, 30]], point_labels=[1], multimask_output=False
    )
    assert not np.allclose(refined, unrefined)


def test_predict_boxes_shapes_and_batching_agree(predictor, nuclei):
    predictor.set_image(nuclei)
    boxes = np.array([[10, 10, 50, 50], [60, 40, 120, 90], [0, 0, 128, 96]], float)
    masks, scores, low_res = predictor.predict_boxes(boxes, batch_size=2)
    assert masks.shape == (3, 96, 128) and scores.shape == (3,) and low_res.shape[0] == 3
    masks1, scores1, _ = predictor.predict_boxes(boxes, batch_size=3)
    np.testing.assert_array_equal(masks, masks1)
    np.testing.assert_allclose(scores, scores1, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"point_coords": [[1, 2]]}, "together"),
        ({"point_coords": [1, 2], "point_labels": [1]}, r"\(N, 2\)"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 0]}, "match"),
        ({"point_coords": [[1, 2]], "point_labels": [2]}, "foreground"),
        ({"point_coords": [[np.nan, 2]], "point_labels": [1]}, "finite"),
        ({"box": [1, 2, 3]}, "x0, y0, x1, y1"),
        ({"mask_input": np.zeros((64, 64))}, "256, 256"),
    ],
)
def test_bad_prompts_are_refused_clearly(predictor, nuclei, kwargs, message):
    predictor.set_image(nuclei)
    with pytest.raises(ValueError, match=message):
        predictor.predict(**kwargs)


def test_bad_boxes_are_refused_clearly(predictor, nuclei):
    predictor.set_image(nuclei)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        predictor.predict_boxes(np.zeros((3, 3)))


def test_constant_image_is_refused(predictor):
    with pytest.raises(ValueError, match="nothing to segment"):
        predictor.set_image(np.full((64, 64), 7, np.uint16))


def test_model_type_is_checked():
    from napari_mobilesam import SegAnyPredictor

    with pytest.raises(TypeError, match="build_mobile_sam"):
        SegAnyPredictor(object())


def count_encodes(predictor, monkeypatch) -> list[int]:
    calls: list[int] = []
    encode = predictor._encode

    def counting(rgb):
        calls.append(1)
        return encode(rgb)

    monkeypatch.setattr(predictor, "_encode", counting)
    return calls


def test_precompute_in_a_thread_then_set_image_skips_the_encoder(predictor, nuclei, monkeypatch):
    import threading

    calls = count_encodes(predictor, monkeypatch)
    other = np.ascontiguousarray(nuclei[::-1])
    predictor.set_image(nuclei)
    assert predictor.current_key is not None
    current = predictor.current_key

    thread = threading.Thread(target=predictor.precompute, args=(other,))
    thread.start()
    thread.join()

    assert predictor.current_key == current  # precompute does not change the current image
    assert predictor.is_cached(other) and len(calls) == 2
    predictor.set_image(other)
    assert len(calls) == 2 and predictor.current_key != current


def test_a_precomputed_embedding_is_used_by_set_image(predictor, nuclei, monkeypatch):
    from napari_mobilesam.imaging.convert import to_rgb_uint8
    from napari_mobilesam.imaging.prepared_input import content_key as _content_key

    predictor.set_image(nuclei)
    embedding = predictor.get_image_embedding().clone()
    masks, scores, _ = predictor.predict(point_coords=[[40, 40]], point_labels=[1])
    predictor.clear_cache()
    calls = count_encodes(predictor, monkeypatch)

    predictor.cache_embedding(_content_key(to_rgb_uint8(nuclei)), embedding, nuclei.shape)
    predictor.set_image(nuclei)

    assert calls == []
    again, again_scores, _ = predictor.predict(point_coords=[[40, 40]], point_labels=[1])
    np.testing.assert_array_equal(again, masks)
    np.testing.assert_allclose(again_scores, scores)


def test_set_embedding_refuses_the_wrong_shape(predictor):
    with pytest.raises(ValueError, match=r"\(1, 256, 64, 64\)"):
        predictor.set_embedding(np.zeros((1, 256, 32, 32), np.float32), (100, 100))
