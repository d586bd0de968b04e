"""Unit tests of the post-processing: top-k, normalisation, .npz, regions and masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service import postprocess


def test_top_k_is_a_sorted_softmax() -> None:
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    ids, scores = postprocess.top_k(logits, 3)
    wide = logits.astype(np.float64)
    expected = np.exp(wide - wide.max()) / np.exp(wide - wide.max()).sum()
    assert ids.tolist() == [1, 2, 0]
    np.testing.assert_allclose(scores, expected[[1, 2, 0]], rtol=1e-12)


def test_top_k_clamps_and_survives_huge_logits() -> None:
    ids, scores = postprocess.top_k(np.array([-1e4, 1e4, 0.0], dtype=np.float32), 10)
    assert len(ids) == 3 and ids[0] == 1
    assert np.isfinite(scores).all() and scores[0] == pytest.approx(1.0)


def test_l2_normalize() -> None:
    assert np.linalg.norm(postprocess.l2_normalize(np.array([3.0, 4.0], dtype=np.float32))) == pytest.approx(1.0)
    assert postprocess.l2_normalize(np.zeros(4, dtype=np.float32)).tolist() == [0, 0, 0, 0]


def test_npz_round_trip() -> None:
    arrays = {"s8": np.ones((2, 4, 4), np.float32), "s16": np.zeros((3, 2, 2), np.float32)}
    loaded = np.load(io.BytesIO(postprocess.encode_npz(arrays)))
    assert sorted(loaded.files) == ["s16", "s8"]
    assert loaded["s8"].shape == (2, 4, 4) and loaded["s8"].dtype == np.float32


def _logits_with(mask: np.ndarray, classes: int = 21, strength: float = 8.0) -> np.ndarray:
    logits = np.zeros((classes, *mask.shape), dtype=np.float32)
    for class_id in range(classes):
        logits[class_id][mask == class_id] = strength
    return logits


def test_regions_become_boxes_in_original_pixels() -> None:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:30, 20:60] = 12  # a dog
    mask[50:90, 50:70] = 15  # a person
    mask[70:90, 5:25] = 12  # a second dog, not connected to the first
    mask[0, 99] = 8  # one pixel of cat: below the minimum area
    found = postprocess.regions(_logits_with(mask), size=(200, 300))
    boxes = sorted((r.class_id, r.box) for r in found)
    assert boxes == [(12, (10, 210, 50, 270)), (12, (40, 30, 120, 90)), (15, (100, 150, 140, 270))]
    assert all(0.99 < r.score <= 1.0 for r in found)
    assert all(r.class_id != 0 for r in found)


def test_region_score_is_mean_class_probability() -> None:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2:6, 2:6] = 3
    logits = _logits_with(mask, strength=0.0)
    logits[3][mask == 3] = 2.0
    (region,) = postprocess.regions(logits, size=(10, 10))
    expected = np.exp(2.0) / (np.exp(2.0) + 20)
    assert region.score == pytest.approx(expected, rel=1e-5)
    assert region.area == 16


def test_mask_png_has_class_ids_at_original_size() -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 12
    png = postprocess.mask_png(_logits_with(mask), size=(8, 6))
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P" and image.size == (8, 6)
    pixels = np.asarray(image)
    assert set(np.unique(pixels)) == {0, 12}
    assert pixels[0, 0] == 12 and pixels[5, 7] == 0
    assert image.getpalette()[12 * 3 : 12 * 3 + 3] == [64, 0, 128]  # VOC's dog colour
