"""Face detectors, crops, the YuNet file lookup and the IoU tracker."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_export import faces
from fer_export.errors import ArtifactError
from fer_export.faces import Face, crop_face, find_yunet_model, open_detector
from fer_export.tracking import IouTracker, iou


@pytest.fixture
def no_yunet(monkeypatch, tmp_path):
    """No YuNet file anywhere: no env var, an empty cache."""
    monkeypatch.delenv(faces.YUNET_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_yunet_lookup_order(no_yunet, monkeypatch, yunet_model):
    assert find_yunet_model() is None
    assert open_detector("auto").name == "haar"
    with pytest.raises(ArtifactError, match="--yunet-model.*FER_YUNET_MODEL.*face_detection_yunet_2026may.onnx"):
        open_detector("yunet")
    cached = faces.yunet_cache_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(yunet_model.read_bytes())
    assert find_yunet_model() == cached
    monkeypatch.setenv(faces.YUNET_ENV, str(yunet_model))
    assert find_yunet_model() == yunet_model
    assert open_detector("auto").name == "yunet"
    with pytest.raises(ArtifactError, match="no such YuNet model file"):
        find_yunet_model(no_yunet / "missing.onnx")


@pytest.mark.parametrize("name", ["yunet", "haar"])
def test_detectors_find_faces_in_source_pixels(name, photos, yunet_model):
    img = cv2.imread(str(photos / "fr_two_people.jpg"))  # 1126x661, two faces
    found = open_detector(name, yunet_model).detect(img)
    assert len(found) >= 2
    for f in found:
        assert 0 <= f.x and f.x + f.w <= img.shape[1] and 0 <= f.y and f.y + f.h <= img.shape[0]
        assert f.w >= 60  # found on a 640 px copy, mapped back to the 1126 px source


def test_yunet_finds_the_large_close_up_face(photos, yunet_model):
    img = cv2.imread(str(photos / "fnp_paul_rudd_1.jpg"))  # missed at full resolution
    assert len(open_detector("yunet", yunet_model).detect(img)) == 1


def test_crop_face_is_square_with_margin_and_clipped():
    img = np.zeros((100, 200, 3), np.uint8)
    assert crop_face(img, Face(50, 20, 40, 60)).shape == (72, 72)  # 60 * 1.2
    assert crop_face(img, Face(0, 0, 40, 60)).shape == (66, 56)  # 72x72 around (20, 30), clipped
    assert crop_face(img, Face(50, 20, 40, 60)).ndim == 2


def test_iou_tracker_keeps_ids_and_starts_new_ones():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    tr = IouTracker(max_missed=1)
    assert tr.update([(0, 0, 10, 10), (50, 50, 10, 10)]) == [0, 1]
    assert tr.update([(52, 51, 10, 10), (1, 0, 10, 10)]) == [1, 0]  # order within a frame does not matter
    assert tr.update([(1, 1, 10, 10)]) == [0]  # 1 missed once
    assert tr.update([(1, 1, 10, 10), (90, 90, 10, 10)]) == [0, 2]
    assert tr.update([]) == []
    assert tr.update([(51, 50, 10, 10)]) == [3]  # 1 ended after missing more than max_missed frames
