"""Face detectors, crops, the YuNet file lookup and the IoU tracker."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_export.batch import faces
from fer_export.batch.config import WorkConfig
from fer_export.batch.faces import Face, crop_face, find_yunet_model
from fer_export.batch.tracking import IouTracker, iou
from fer_export.errors import ArtifactError, InputError, SpecError
from fer_export.spec import Framing, ModelSpec


def open_detector(name, yunet_model=None, **options):
    return faces.open_detector(WorkConfig(detector=name, yunet_model=yunet_model, **options))


@pytest.fixture
def no_yunet(monkeypatch, tmp_path):
    """No YuNet file anywhere: no env var, an empty cache."""
    monkeypatch.delenv(faces.YUNET_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_yunet_lookup_order(no_yunet, monkeypatch, yunet_model):
    """--yunet-model, then $FER_YUNET_MODEL, then the user cache, then the bundled file."""
    assert find_yunet_model() == faces.BUNDLED_YUNET
    cached = faces.yunet_cache_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(yunet_model.read_bytes())
    assert find_yunet_model() == cached
    monkeypatch.setenv(faces.YUNET_ENV, str(yunet_model))
    assert find_yunet_model() == yunet_model
    other = no_yunet / "face_detection_yunet_2023mar.onnx"  # any name: whatever FaceDetectorYN loads
    other.write_bytes(yunet_model.read_bytes())
    assert find_yunet_model(other) == other
    assert open_detector("yunet", other).path == other
    with pytest.raises(ArtifactError, match="no such YuNet model file"):
        find_yunet_model(no_yunet / "missing.onnx")
    monkeypatch.setenv(faces.YUNET_ENV, str(no_yunet / "gone.onnx"))
    with pytest.raises(ArtifactError, match="FER_YUNET_MODEL"):
        find_yunet_model()


def test_fresh_install_gets_the_bundled_yunet(no_yunet):
    """No env var, an empty cache: the default config opens the YuNet file shipped in the package, the
    OpenCV zoo's file unmodified (the sha256 its licence file records)."""
    import hashlib

    detector = faces.open_detector(WorkConfig())
    assert detector.name == "yunet" and detector.path == faces.BUNDLED_YUNET
    sha256 = hashlib.sha256(faces.BUNDLED_YUNET.read_bytes()).hexdigest()
    assert sha256 == "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
    assert sha256 in (faces.BUNDLED_YUNET.parent / "LICENSE-yunet.txt").read_text()
    assert "MIT" in (faces.BUNDLED_YUNET.parent / "LICENSE-yunet.txt").read_text()


def test_yunet_file_missing_from_the_install(no_yunet, monkeypatch, tmp_path):
    """Only an install that lost its bundled file falls back to Haar (auto) or says what to do (yunet)."""
    monkeypatch.setattr(faces, "BUNDLED_YUNET", tmp_path / "absent.onnx")
    assert find_yunet_model() is None
    assert open_detector("auto").name == "haar"
    with pytest.raises(ArtifactError, match="reinstall.*--yunet-model.*FER_YUNET_MODEL.*--detector haar"):
        open_detector("yunet")


def test_unloadable_yunet_file_is_an_artifact_error(tmp_path):
    bad = tmp_path / "not_yunet.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="OpenCV cannot load this YuNet model"):
        open_detector("yunet", bad)


def _frames(videos, n):
    cap = cv2.VideoCapture(str(videos / "fer_woman2.mp4"))
    return [cap.read()[1] for _ in range(n)]


def test_onnxruntime_yunet_finds_what_opencvs_finds(photos, videos, yunet_model):
    """YuNet decoded in numpy on onnxruntime's outputs: the faces, scores and landmarks of
    cv2.FaceDetectorYN on the same file, on every shared photo and on video frames."""
    ort_net = faces.YuNetDetector(yunet_model, 0.7, backend="onnxruntime")
    cv_net = faces.YuNetDetector(yunet_model, 0.7, backend="opencv")
    assert (ort_net.backend, cv_net.backend) == ("onnxruntime", "opencv")
    assert faces.open_detector(WorkConfig(yunet_model=str(yunet_model))).backend == "onnxruntime"
    images = [cv2.imread(str(p)) for p in sorted(photos.iterdir())] + _frames(videos, 5)
    images = [im for im in images if im is not None]
    found = 0
    for im in images:
        a, b = (sorted(net._detect(im), key=lambda f: -f[1]) for net in (ort_net, cv_net))
        assert len(a) == len(b)
        for (box_a, score_a, marks_a), (box_b, score_b, marks_b) in zip(a, b):
            np.testing.assert_allclose(box_a, box_b, atol=0.01)
            np.testing.assert_allclose(marks_a, marks_b, atol=0.01)
            assert score_a == pytest.approx(score_b, abs=1e-4)
        found += len(a)
    assert found >= len(images)  # the comparison saw faces (every photo and frame has one or more)
    gray = cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)  # a gray picture is read as BGR
    assert len(ort_net._detect(gray)) == len(cv_net._detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))


def test_a_yunet_file_without_the_2023_outputs_is_not_run_on_onnxruntime(tmp_path, yunet_model):
    """An older or foreign file (outputs not named cls_8 ... kps_32) goes to OpenCV, which judges it."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(yunet_model))
    renamed = {o.name: "out_" + o.name for o in model.graph.output}
    for node in model.graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
    for o in model.graph.output:
        o.name = renamed[o.name]
    other = tmp_path / "other_yunet.onnx"
    onnx.save(model, str(other))
    assert faces._yunet_session(other) is None
    with pytest.raises(ArtifactError, match="not a YuNet model with outputs cls_8"):
        faces.YuNetDetector(other, 0.7, backend="onnxruntime")
    with pytest.raises(ArtifactError, match="OpenCV cannot run this YuNet model"):
        faces.YuNetDetector(other, 0.7)  # auto: OpenCV's turn, and it wants those names too


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


def test_multi_scale_detection_merges_duplicates_and_filters_small_faces(photos, yunet_model):
    """Two scales see the same faces: NMS keeps one box per face; --min-face drops the small ones."""
    img = cv2.imread(str(photos / "pyfeat_multi_face.jpg"))  # 1000x667, several faces
    one = open_detector("yunet", yunet_model, det_sizes=(640,), min_face=0).detect(img)
    two = open_detector("yunet", yunet_model, det_sizes=(320, 640), min_face=0).detect(img)
    assert len(one) >= 4 and len(one) <= len(two) <= len(one) + 1  # no face twice
    assert all(faces.NMS_IOU >= max(_iou(a, b) for b in two if b != a) for a in two)
    assert [f.x for f in two] == sorted(f.x for f in two)  # left to right
    cut = sorted(min(f.w, f.h) for f in one)[len(one) // 2]  # the median face side
    big = open_detector("yunet", yunet_model, min_face=cut).detect(img)
    assert big == [f for f in one if min(f.w, f.h) >= cut] and 0 < len(big) < len(one)


def test_a_picture_without_a_face_found_gets_a_second_look_enlarged(small_face, yunet_model):
    """A small face in a large picture, missed on the 640 px copy, is found by looking again at 2x
    (1280 px) exactly as detecting at 1280 finds it, in source pixels; a video frame is not searched again."""
    picture, width = small_face
    assert open_detector("yunet", yunet_model, look_again=1).detect(picture, still=True) == []
    detector = open_detector("yunet", yunet_model)  # look_again: 2 by default
    assert detector.detect(picture) == []  # a video frame
    again = detector.detect(picture, still=True)
    assert again == open_detector("yunet", yunet_model, det_sizes=(1280,)).detect(picture)
    assert len(again) == 1 and 900 < again[0].x < 900 + width and again[0].w >= 25


class _OnlyMirrored(faces._Detector):
    """A detector that finds a 40x40 "face" at (10, 20) only when the image's left quarter is white, and
    records the width of each image it searched."""

    name = "fake"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.widths = []

    def _detect(self, image):
        self.widths.append(image.shape[1])
        if image[:, :image.shape[1] // 4].mean() < 200:
            return []
        return [((10.0, 20.0, 40.0, 40.0), 0.9, (20.0, 30.0, 40.0, 30.0, 30.0, 40.0, 22.0, 50.0, 38.0, 50.0))]


def test_second_look_tries_enlarged_then_halfway_each_as_is_then_mirrored():
    """Looks run in order until one finds a face; a face found mirrored comes back in the unmirrored
    picture's pixels, its landmarks under their own names (the right eye stays the right eye)."""
    picture = np.zeros((300, 400, 3), np.uint8)
    picture[:, 300:] = 255  # white on the right: the fake finds its face only once the picture is mirrored
    detector = _OnlyMirrored(look_again=3.0)
    assert detector.second_looks(0.5) == [(1.5, False, 0), (1.5, True, 0), (1.0, False, 0), (1.0, True, 0),
                                          (0.5, False, -30), (0.5, False, 30), (1.0, False, -30), (1.0, False, 30)]
    assert _OnlyMirrored(look_again=1.0).second_looks(0.5) == []
    assert faces.second_looks(2.0, "haar") == [(2.0, False, 0)]  # Haar: no score to keep false faces out
    assert detector.detect(picture) == [] and detector.widths == [400]  # a video frame: one look
    detector.widths.clear()
    found = detector.detect(picture, still=True)
    assert detector.widths == [400, 1200, 1200]  # 1x, 3x, 3x mirrored: found, no further look
    # the fake's box (10, 20, 40, 40) in the mirrored 1200 px picture is (1150, 20, 40, 40) unmirrored, /3 in source px
    assert [f.box for f in found] == [(383, 7, 14, 13)]  # corners rounded: 383.3 to 396.7, 6.7 to 20
    marks = np.reshape(found[0].landmarks, (-1, 2))
    np.testing.assert_allclose(marks, np.array([[1160, 30], [1180, 30], [1170, 40], [1162, 50], [1178, 50]]) / 3,
                               atol=0.01)
    assert marks[0, 0] < marks[1, 0] and marks[3, 0] < marks[4, 0]  # right eye/mouth corner on the image's left


def test_a_face_found_mirrored_is_the_face_found_as_it_is(photos, yunet_model):
    """YuNet on a mirrored photo, mapped back, gives the plain search's box and landmarks within a few
    pixels, so a face found only mirrored is framed like any other."""
    img = cv2.imread(str(photos / "fr_obama-480p.jpg"))
    detector = open_detector("yunet", yunet_model)
    (plain,), (mirrored,) = detector._found(img, 1.0, img.shape), detector._found(img, 1.0, img.shape, True)
    side = max(plain.w, plain.h)
    assert np.abs(np.subtract(plain.box, mirrored.box)).max() < 0.05 * side
    assert np.abs(np.subtract(plain.landmarks, mirrored.landmarks)).max() < 0.05 * side


def test_a_face_found_turned_is_the_face_found_as_it_is(photos, yunet_model):
    """YuNet on a copy turned by 30 degrees, mapped back, gives the plain search's face: its box (the
    same size, upright, about the centre mapped back) and its landmarks, within a tenth of its side."""
    img = cv2.imread(str(photos / "fr_obama-480p.jpg"))
    detector = open_detector("yunet", yunet_model)
    (plain,) = detector._found(img, 1.0, img.shape)
    side = max(plain.w, plain.h)
    for turn in faces.TURNS:
        canvas, back = faces.turned(img, turn)
        assert canvas.shape[0] > img.shape[0] and canvas.shape[1] > img.shape[1]  # all of the picture kept
        (found,) = detector._found(canvas, 1.0, img.shape, back=back)
        centre = np.add(found.box[:2], np.divide(found.box[2:], 2))
        assert np.abs(centre - np.add(plain.box[:2], np.divide(plain.box[2:], 2))).max() < 0.05 * side
        assert abs(found.w - plain.w) < 0.15 * side
        # YuNet's landmarks of a tilted face lean towards upright (here by about half the tilt)
        assert np.abs(np.subtract(plain.landmarks, found.landmarks)).max() < 0.1 * side


def _iou(a, b):
    return iou(a.box, b.box)


def test_max_faces_keeps_the_largest_in_order(photos, yunet_model):
    img = cv2.imread(str(photos / "pyfeat_multi_face.jpg"))
    every = open_detector("yunet", yunet_model).detect(img)
    kept = open_detector("yunet", yunet_model, max_faces=2).detect(img)
    largest = sorted(every, key=lambda f: f.w * f.h, reverse=True)[:2]
    assert len(every) > 2 and kept == sorted(largest, key=lambda f: (f.x, f.y))


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


# ---- framing: crops aligned as the model's training crops were ------------------------------------

TEMPLATE = Framing(landmarks=(0.3, 0.37, 0.7, 0.37, 0.5, 0.59, 0.34, 0.76, 0.66, 0.76), box=(0.0, 0.05, 1.25))


def test_spec_carries_a_framing_and_reads_as_before_without_one():
    assert "framing" not in ModelSpec().to_json()  # old specs, and their hashes, stay as they were
    spec = ModelSpec(framing=TEMPLATE)
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec.from_json(ModelSpec().to_json()).framing is None
    for bad in ({"landmarks": [0.5] * 4, "box": [0, 0, 1]}, {"landmarks": [0.5] * 10, "box": [0, 0, 0]},
                {"landmarks": [0.5] * 10}):
        with pytest.raises(SpecError, match="framing"):
            ModelSpec.from_dict({**ModelSpec().to_dict(), "framing": bad})


def test_without_a_framing_crops_are_the_box_crops():
    img = np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    face = Face(50, 20, 40, 60, 0.9, (60.0, 40.0, 80.0, 40.0, 70.0, 55.0, 62.0, 65.0, 78.0, 65.0))
    assert np.array_equal(faces.frame_face(img, face, None), crop_face(img, face))


def test_landmarks_at_the_template_give_that_square():
    """A face whose landmarks sit where the template puts them in a square of side 80 at (30, 10)
    is cropped to exactly that square; rotating the image rotates the crop back."""
    img = np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)
    marks = np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)
    crop = faces.frame_face(img, Face(30, 10, 80, 80, 0.9, tuple(marks.ravel())), TEMPLATE)
    assert crop.shape == (80, 80) and np.abs(crop.astype(int) - img[10:90, 30:110]).max() <= 1
    smooth = cv2.normalize(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 4), None, 0, 255, cv2.NORM_MINMAX)
    rot = cv2.getRotationMatrix2D((80, 60), 20, 1.0)
    turned = cv2.warpAffine(smooth, rot, (160, 120), flags=cv2.INTER_LINEAR).astype(np.uint8)
    moved = np.c_[marks, np.ones(5)] @ rot.T
    back = faces.frame_face(turned, Face(0, 0, 1, 1, 0.9, tuple(moved.ravel())), TEMPLATE)
    inner = np.s_[10:70, 10:70]  # away from the corners the rotation filled in
    want = smooth[10:90, 30:110][inner]
    assert back.shape == (80, 80) and np.abs(back[inner] - want).mean() < 2 < np.abs(back[inner] - want.T).mean()


def test_box_only_faces_are_framed_by_the_box_rule():
    img = np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8)
    crop = faces.frame_face(img, Face(60, 50, 80, 80), TEMPLATE)  # side 100, centre (100, 94)
    assert crop.shape == (100, 100) and np.abs(crop.astype(int) - img[44:144, 50:150]).max() <= 1
    edge = faces.frame_face(img, Face(0, 0, 80, 80), TEMPLATE)  # starts at (-10, -6): edge pixels repeated
    assert edge.shape == (100, 100) and (edge[:6, :10] == img[0, 0]).all()


def test_a_detectors_own_box_rule_comes_before_the_landmarks():
    """A framing calibrated per detector frames that detector's faces by their box, landmarks or not;
    other detectors' faces follow the landmarks (or the general box rule)."""
    framing = Framing(TEMPLATE.landmarks, TEMPLATE.box, detector_boxes=(("yunet", (0.1, 0.0, 1.0)),))
    assert ModelSpec.from_json(ModelSpec(framing=framing).to_json()).framing == framing
    img = np.random.default_rng(3).integers(0, 255, (200, 200), dtype=np.uint8)
    marks = tuple((np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)).ravel())
    face = Face(60, 50, 80, 80, 0.9, marks)
    by_box = faces.frame_face(img, face, framing, "yunet")  # side 80, centre (108, 90)
    assert by_box.shape == (80, 80) and np.abs(by_box.astype(int) - img[50:130, 68:148]).max() <= 1
    by_marks = faces.frame_face(img, face, framing, "other")
    assert np.array_equal(by_marks, faces.frame_face(img, face, TEMPLATE))
    with pytest.raises(SpecError, match="framing boxes"):
        ModelSpec(framing=Framing(TEMPLATE.landmarks, TEMPLATE.box, detector_boxes=(("yunet", (0, 0, 0)),)))


def test_yunet_landmarks_are_in_source_pixels(photos):
    img = cv2.imread(str(photos / "fr_two_people.jpg"))  # detected on a 640 px copy
    for f in open_detector("yunet").detect(img):
        pts = np.reshape(f.landmarks, (-1, 2))
        assert pts.shape == (5, 2)
        assert (f.x - 5 <= pts[:, 0]).all() and (pts[:, 0] <= f.x + f.w + 5).all()
        assert (f.y - 5 <= pts[:, 1]).all() and (pts[:, 1] <= f.y + f.h + 5).all()
        assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # right eye and mouth corner on the image's left
    assert all(f.landmarks is None for f in open_detector("haar").detect(img))


def test_the_models_framing_reaches_the_detector(tmp_path, exported, photos):
    """A model whose spec has a framing gets aligned crops (unless crop="box"); one without, box crops."""
    from fer_export.batch.work import faces_in, open_models
    from training.face_template import stamp

    framed = stamp(exported["onnx"], tmp_path / "framed.onnx", TEMPLATE)
    img = cv2.imread(str(photos / "fr_two_people.jpg"))
    _, plain = open_models(WorkConfig(model=str(exported["onnx"])))
    clf, aligned = open_models(WorkConfig(model=str(framed)))
    _, boxed = open_models(WorkConfig(model=str(framed), crop="box"))
    assert clf.spec.framing == TEMPLATE and aligned.framing == TEMPLATE
    assert plain.framing is None and boxed.framing is None
    found, crops = faces_in(img, aligned)
    assert all(c.shape[0] == c.shape[1] for c in crops)
    assert [c.shape for c in crops] != [c.shape for c in faces_in(img, plain)[1]]
    with pytest.raises(InputError, match="crop must be one of"):
        WorkConfig(crop="aligned")


def test_a_view_scales_the_framed_square_about_its_centre():
    """A picture's wider and tighter views: the same centre, the side times ``scale``, by the box rule
    and by the landmark warp alike."""
    img = np.random.default_rng(4).integers(0, 255, (200, 200), dtype=np.uint8)
    tight = faces.frame_face(img, Face(60, 50, 80, 80), TEMPLATE, scale=0.8)  # side 80, centre (100, 94)
    assert tight.shape == (80, 80) and np.abs(tight.astype(int) - img[54:134, 60:140]).max() <= 1
    marks = tuple((np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)).ravel())  # square (30, 10), side 80
    wide = faces.frame_face(img, Face(40, 20, 60, 60, 0.9, marks), TEMPLATE, "other", scale=1.25)
    assert wide.shape == (100, 100) and np.abs(wide.astype(int) - img[0:100, 20:120]).max() <= 1


def test_pictures_get_three_views_of_a_framed_face_and_video_frames_one(tmp_path, exported, photos):
    """Faces in pictures cropped with a framing are classified as their framed crop and its views
    crop_spread wider and tighter, averaged; video frames, box crops and crop_spread=0 get one crop."""
    from fer_export.batch.work import faces_in, open_models, per_face
    from training.face_template import stamp

    framed = stamp(exported["onnx"], tmp_path / "framed.onnx", TEMPLATE)
    img = cv2.imread(str(photos / "fr_two_people.jpg"))
    clf, det = open_models(WorkConfig(model=str(framed), crop_spread=0.2))
    found, crops = faces_in(img, det, still=True)
    assert len(found) == 2 and len(crops) == 6 and det.views == (1.0, 0.8, 1.2)
    for k, face in enumerate(found):
        for v, scale in enumerate(det.views):
            np.testing.assert_array_equal(crops[3 * k + v], faces.frame_face(img, face, TEMPLATE, "yunet", scale))
    assert len(faces_in(img, det)[1]) == 2  # a video frame
    assert len(faces_in(img, open_models(WorkConfig(model=str(framed), crop_spread=0))[1], still=True)[1]) == 2
    assert len(faces_in(img, open_models(WorkConfig(model=str(framed), crop="box"))[1], still=True)[1]) == 2
    probs = clf.predict(crops)
    averaged = per_face(probs, 2)
    np.testing.assert_allclose(averaged, probs.reshape(2, 3, -1).mean(axis=1))
    np.testing.assert_allclose(averaged.sum(axis=1), 1, atol=1e-5)
    for bad in (-0.1, 0.6, "0.2", True):
        with pytest.raises(InputError, match="crop_spread must be a number|crop spread must be in"):
            WorkConfig(crop_spread=bad)


def test_a_framing_with_a_size_brings_large_faces_down_to_it():
    """Faces far larger than the training crops reach the model at the crops' resolution (area-averaged)."""
    sized = Framing(TEMPLATE.landmarks, TEMPLATE.box, size=48)
    spec = ModelSpec(input_size=(96, 96), framing=sized)
    assert ModelSpec.from_json(spec.to_json()).framing == sized
    assert ModelSpec.from_json(ModelSpec(framing=TEMPLATE).to_json()).framing.size is None
    with pytest.raises(SpecError, match="framing size"):
        ModelSpec(framing=Framing(TEMPLATE.landmarks, TEMPLATE.box, size=2))
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
    large, small = Face(100, 100, 300, 300), Face(10, 10, 30, 30)
    assert faces.frame_face(big, large, sized).shape == (48, 48)
    assert faces.frame_face(big, large, TEMPLATE).shape[0] > 300  # no size: the face's own resolution
    assert faces.frame_face(big, small, sized).shape == faces.frame_face(big, small, TEMPLATE).shape  # never upscaled
    expected = cv2.resize(faces.frame_face(big, large, TEMPLATE), (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(faces.frame_face(big, large, sized), expected)


def test_tracker_follows_a_face_that_moved_more_than_its_boxes_overlap():
    """Sampled sparsely (--video-fps 5 of a 25 fps video), a face moves more than its boxes overlap:
    IoU alone would give it a new id every frame."""
    tr = IouTracker()
    assert tr.update([(0, 0, 100, 100), (400, 0, 100, 100)]) == [0, 1]
    assert iou((60, 0, 100, 100), (0, 0, 100, 100)) < 0.3  # moved 0.6 of its side: no IoU match
    assert tr.update([(60, 0, 100, 100), (400, 70, 100, 100)]) == [0, 1]
    assert tr.update([(260, 0, 100, 100)]) == [2]  # two sides away: another face
    assert tr.update([(60, 0, 200, 200)]) == [3]  # twice the size where face 0 was: not the same face
