"""MediaPipe's SSD decoding (service/ssd.py) and the letterbox geometry, on hand-made numbers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from support import STORE

from service.preprocess import Letterbox, letterbox, mediapipe_warp
from service.ssd import Detections, generate_anchors, parse_detector, weighted_nms


def spec(name: str = "blazeface_short_range"):
    return parse_detector(json.loads((STORE / name / "manifest.json").read_text())["detector"])


def test_short_range_anchors_follow_the_calculators_algorithm() -> None:
    anchors = generate_anchors(spec().anchors)
    # Stride 8: a 16x16 grid, 2 anchors a cell (aspect 1 and the interpolated scale); the three stride-16
    # layers share an 8x8 grid with 2 each.
    assert anchors.shape == (16 * 16 * 2 + 8 * 8 * 6, 4)
    np.testing.assert_allclose(anchors[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(anchors[512], [0.5 / 8, 0.5 / 8, 1, 1])
    np.testing.assert_allclose(anchors[512:518], np.repeat(anchors[512:513], 6, axis=0))
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8, 1, 1])


def test_full_range_has_one_anchor_per_stride_4_cell() -> None:
    anchors = generate_anchors(spec("blazeface_full_range").anchors)
    assert anchors.shape == (48 * 48, 4)
    np.testing.assert_allclose(anchors[49], [1.5 / 48, 1.5 / 48, 1, 1])


def test_anchor_sizes_when_not_fixed() -> None:
    """SSD's scales: min to max over the layers, and sqrt(s_k * s_k+1) for the interpolated one."""
    options = replace(spec().anchors, fixed_anchor_size=False)
    anchors = generate_anchors(options)
    scales = [0.1484375 + (0.75 - 0.1484375) * k / 3 for k in range(4)]
    np.testing.assert_allclose(anchors[0, 2:], [scales[0], scales[0]], rtol=1e-6)
    np.testing.assert_allclose(anchors[1, 2:], [np.sqrt(scales[0] * scales[1])] * 2, rtol=1e-6)
    # The last layer's interpolated scale reaches to 1.0.
    np.testing.assert_allclose(anchors[517, 2:], [np.sqrt(scales[3] * 1.0)] * 2, rtol=1e-6)


def test_a_manifest_whose_anchors_do_not_fit_its_boxes_is_refused() -> None:
    section = json.loads((STORE / "blazeface_short_range" / "manifest.json").read_text())["detector"]
    section["anchors"]["strides"] = [8, 16, 16, 32]
    with pytest.raises(ValueError, match="anchors"):
        parse_detector(section)


def _found(boxes: list[list[float]], scores: list[float]) -> Detections:
    points = np.array([[[b[0], b[1]]] for b in boxes], dtype=np.float32)
    return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), points)


def test_weighted_nms_averages_a_group_by_score_and_keeps_the_best_score() -> None:
    found = _found([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.6, 0.9, 0.7])
    kept = weighted_nms(found, 0.3)
    np.testing.assert_allclose(kept.scores, [0.9, 0.7])
    np.testing.assert_allclose(kept.boxes[0], [0.6, 0.6, 10.6, 10.6], rtol=1e-6)  # (0.6*0 + 0.9*1) / 1.5
    np.testing.assert_allclose(kept.keypoints[0, 0], [0.6, 0.6], rtol=1e-6)
    np.testing.assert_allclose(kept.boxes[1], [50, 50, 60, 60])


def test_weighted_nms_keeps_boxes_that_overlap_by_at_most_the_threshold() -> None:
    # IoU of these two: 50 / 150 = 1/3 > 0.3; shifted further, 0.25 is kept apart.
    assert len(weighted_nms(_found([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8]), 0.3).scores) == 1
    assert len(weighted_nms(_found([[0, 0, 10, 10], [6, 0, 16, 10]], [0.9, 0.8]), 0.3).scores) == 2
    empty = weighted_nms(_found([], []), 0.3)
    assert empty.boxes.shape == (0, 4) and empty.scores.size == 0


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (5000, 1), (640, 480), (480, 640), (10000, 3), (128, 128)])
def test_letterbox_fits_centres_and_maps_back(size: tuple[int, int]) -> None:
    place = letterbox(size, 128)
    width, height = size[0] * place.scale, size[1] * place.scale
    assert max(width, height) == pytest.approx(128)
    assert place.left == pytest.approx((128 - width) / 2) and place.top == pytest.approx((128 - height) / 2)
    x, y = place.to_original(np.array([place.left, place.left + width]), np.array([place.top, place.top + height]))
    np.testing.assert_allclose(x, [0, size[0]], atol=1e-9 * max(size))
    np.testing.assert_allclose(y, [0, size[1]], atol=1e-9 * max(size))


def test_letterbox_of_a_landscape_photo() -> None:
    assert letterbox((640, 480), 128) == Letterbox(left=0.0, top=16.0, scale=0.2)


@pytest.mark.parametrize(("size", "keep_aspect"), [((512, 355), True), ((40, 300), True), ((512, 355), False)])
def test_mediapipe_warp_samples_like_opencv(size: tuple[int, int], keep_aspect: bool) -> None:
    """Output pixel (x, y) is the bilinear sample at x * S / 128 + corner, pixel centres at their index, zeros outside:
    cv2.warpAffine's arithmetic, written out in numpy."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    ours = np.asarray(mediapipe_warp(Image.fromarray(pixels), 128, keep_aspect)).astype(float)
    width, height = size
    if keep_aspect:
        side = max(size)
        sx = sy = side / 128
        cx, cy = (width - side) / 2, (height - side) / 2
    else:
        sx, sy, cx, cy = width / 128, height / 128, 0.0, 0.0
    padded = np.zeros((height + 2, width + 2, 3))
    padded[1:-1, 1:-1] = pixels
    xs, ys = np.meshgrid(np.arange(128) * sx + cx, np.arange(128) * sy + cy)
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
    inside = (xs > -1) & (xs < width) & (ys > -1) & (ys < height)
    ix, iy = np.clip(x0.astype(int) + 1, 0, width), np.clip(y0.astype(int) + 1, 0, height)
    sample = (
        padded[iy, ix] * (1 - fx) * (1 - fy) + padded[iy, ix + 1] * fx * (1 - fy)
        + padded[iy + 1, ix] * (1 - fx) * fy + padded[iy + 1, ix + 1] * fx * fy
    )  # fmt: skip
    expected = np.where(inside[..., None], sample, 0)
    core = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    # Pillow rounds each sample to 8 bits; at the border it reads the edge pixel where OpenCV reads zero.
    assert np.abs(ours - expected)[core].max() <= 1.0
    assert (ours[~inside] == 0).all()
