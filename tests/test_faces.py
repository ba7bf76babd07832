"""Face detectors, crops, the YuNet file lookup and the IoU tracker."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fer_export.batch import crops, faces
from fer_export.batch.config import WorkConfig
from fer_export.batch.crops import Face, FaceCrops, Framer, crop_face
from fer_export.batch.faces import find_yunet_model
from fer_export.batch.settings import CropSettings, DetectionSettings
from fer_export.batch.tracking import IouTracker, iou
from fer_export.errors import ArtifactError, InputError, SpecError
from fer_export.spec import Framing, ModelSpec


def open_detector(name, yunet_model=None, **options):
    return faces.open_detector(DetectionSettings(detector=name, yunet_model=yunet_model, **options))


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

    detector = faces.open_detector()
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
    assert faces.open_detector(DetectionSettings(yunet_model=str(yunet_model))).backend == "onnxruntime"
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
    from fer_export.batch.yunet import yunet_session

    assert yunet_session(other) is None
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
    assert all(DetectionSettings().det_nms >= max(_iou(a, b) for b in two if b != a) for a in two)
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
    detector = _OnlyMirrored(settings=DetectionSettings(look_again=3.0, min_face=0))
    assert detector.second_looks(0.5) == [(1.5, False, 0), (1.5, True, 0), (1.0, False, 0), (1.0, True, 0),
                                          (0.5, False, -30), (0.5, False, 30), (1.0, False, -30), (1.0, False, 30)]
    assert _OnlyMirrored().second_looks(0.5) == []  # a detector made directly looks once
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
    assert np.array_equal(crops.frame_face(img, face, None), crop_face(img, face))


def test_landmarks_at_the_template_give_that_square():
    """A face whose landmarks sit where the template puts them in a square of side 80 at (30, 10)
    is cropped to exactly that square; rotating the image rotates the crop back."""
    img = np.random.default_rng(1).integers(0, 255, (120, 160), dtype=np.uint8)
    marks = np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)
    crop = crops.frame_face(img, Face(30, 10, 80, 80, 0.9, tuple(marks.ravel())), TEMPLATE)
    assert crop.shape == (80, 80) and np.abs(crop.astype(int) - img[10:90, 30:110]).max() <= 1
    smooth = cv2.normalize(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 4), None, 0, 255, cv2.NORM_MINMAX)
    rot = cv2.getRotationMatrix2D((80, 60), 20, 1.0)
    turned = cv2.warpAffine(smooth, rot, (160, 120), flags=cv2.INTER_LINEAR).astype(np.uint8)
    moved = np.c_[marks, np.ones(5)] @ rot.T
    back = crops.frame_face(turned, Face(0, 0, 1, 1, 0.9, tuple(moved.ravel())), TEMPLATE)
    inner = np.s_[10:70, 10:70]  # away from the corners the rotation filled in
    want = smooth[10:90, 30:110][inner]
    assert back.shape == (80, 80) and np.abs(back[inner] - want).mean() < 2 < np.abs(back[inner] - want.T).mean()


def test_box_only_faces_are_framed_by_the_box_rule():
    img = np.random.default_rng(2).integers(0, 255, (200, 200), dtype=np.uint8)
    crop = crops.frame_face(img, Face(60, 50, 80, 80), TEMPLATE)  # side 100, centre (100, 94)
    assert crop.shape == (100, 100) and np.abs(crop.astype(int) - img[44:144, 50:150]).max() <= 1
    edge = crops.frame_face(img, Face(0, 0, 80, 80), TEMPLATE)  # starts at (-10, -6): edge pixels repeated
    assert edge.shape == (100, 100) and (edge[:6, :10] == img[0, 0]).all()


def test_a_detectors_own_box_rule_comes_before_the_landmarks():
    """A framing calibrated per detector frames that detector's faces by their box, landmarks or not;
    other detectors' faces follow the landmarks (or the general box rule)."""
    framing = Framing(TEMPLATE.landmarks, TEMPLATE.box, detector_boxes=(("yunet", (0.1, 0.0, 1.0)),))
    assert ModelSpec.from_json(ModelSpec(framing=framing).to_json()).framing == framing
    img = np.random.default_rng(3).integers(0, 255, (200, 200), dtype=np.uint8)
    marks = tuple((np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)).ravel())
    face = Face(60, 50, 80, 80, 0.9, marks)
    by_box = crops.frame_face(img, face, framing, "yunet")  # side 80, centre (108, 90)
    assert by_box.shape == (80, 80) and np.abs(by_box.astype(int) - img[50:130, 68:148]).max() <= 1
    by_marks = crops.frame_face(img, face, framing, "other")
    assert np.array_equal(by_marks, crops.frame_face(img, face, TEMPLATE))
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
    from fer_export.batch.models import open_models
    from fer_export.batch.per_input import faces_in
    from training.face_template import stamp

    framed = stamp(exported["onnx"], tmp_path / "framed.onnx", TEMPLATE)
    img = cv2.imread(str(photos / "fr_two_people.jpg"))
    _, plain = open_models(WorkConfig.build(model=str(exported["onnx"])))
    clf, aligned = open_models(WorkConfig.build(model=str(framed)))
    _, boxed = open_models(WorkConfig.build(model=str(framed), crop="box"))
    assert clf.spec.framing == TEMPLATE and aligned.framer.framing == TEMPLATE
    assert plain.framer.framing is None and boxed.framer.framing is None
    found, cut = faces_in(img, aligned)
    assert all(c.shape[0] == c.shape[1] for c in cut.crops)
    assert [c.shape for c in cut.crops] != [c.shape for c in faces_in(img, plain)[1].crops]
    with pytest.raises(InputError, match="crop must be one of"):
        WorkConfig.build(crop="aligned")


def test_a_view_scales_the_framed_square_about_its_centre():
    """A picture's wider and tighter views: the same centre, the side times ``scale``, by the box rule
    and by the landmark warp alike."""
    img = np.random.default_rng(4).integers(0, 255, (200, 200), dtype=np.uint8)
    tight = crops.frame_face(img, Face(60, 50, 80, 80), TEMPLATE, scale=0.8)  # side 80, centre (100, 94)
    assert tight.shape == (80, 80) and np.abs(tight.astype(int) - img[54:134, 60:140]).max() <= 1
    marks = tuple((np.reshape(TEMPLATE.landmarks, (-1, 2)) * 80 + (30, 10)).ravel())  # square (30, 10), side 80
    wide = crops.frame_face(img, Face(40, 20, 60, 60, 0.9, marks), TEMPLATE, "other", scale=1.25)
    assert wide.shape == (100, 100) and np.abs(wide.astype(int) - img[0:100, 20:120]).max() <= 1


def test_pictures_get_three_views_of_a_framed_face_and_video_frames_one(tmp_path, exported, photos):
    """Faces in pictures cropped with a framing are classified as their framed crop and its views
    crop_spread wider and tighter, averaged; video frames, box crops and crop_spread=0 get one crop."""
    from fer_export.batch.models import open_models
    from fer_export.batch.per_input import faces_in
    from training.face_template import stamp

    framed = stamp(exported["onnx"], tmp_path / "framed.onnx", TEMPLATE)
    img = cv2.imread(str(photos / "fr_two_people.jpg"))
    clf, det = open_models(WorkConfig.build(model=str(framed), crop_spread=0.2))
    found, cut = faces_in(img, det, still=True)
    assert len(found) == 2 and len(cut) == 6 and cut.views == 3 and det.framer.views == (1.0, 0.8, 1.2)
    for k, face in enumerate(found):
        for v, scale in enumerate(det.framer.views):
            np.testing.assert_array_equal(cut.crops[3 * k + v], crops.frame_face(img, face, TEMPLATE, "yunet", scale))
    frame = faces_in(img, det)[1]  # a video frame
    assert (len(frame), frame.views) == (2, 1)
    one = open_models(WorkConfig.build(model=str(framed), crop_spread=0))[1]
    assert len(faces_in(img, one, still=True)[1]) == 2
    assert len(faces_in(img, open_models(WorkConfig.build(model=str(framed), crop="box"))[1], still=True)[1]) == 2
    probs = clf.predict(cut.crops)
    averaged = cut.average(probs)
    np.testing.assert_allclose(averaged, probs.reshape(2, 3, -1).mean(axis=1))
    np.testing.assert_allclose(averaged.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(frame.average(probs[:2]), probs[:2])  # one view: the crop's own
    with pytest.raises(ValueError, match="5 rows of probabilities for 6 crops"):
        cut.average(probs[:5])
    for bad in (-0.1, 0.6, "0.2", True):
        with pytest.raises(InputError, match="crop_spread must be a number|crop spread must be in"):
            CropSettings(crop_spread=bad)


def test_a_spread_that_cannot_apply_is_refused(tmp_path, exported):
    """--crop-spread with --crop box is refused when the settings are made (a Python caller too), and
    with a model that has no framing when the detector opens; a spread of 0 (one crop) always passes."""
    for given in ({"crop": "box", "crop_spread": 0.3}, {"crop": "box", "crop_spread": 0.22}):
        with pytest.raises(InputError, match="--crop-spread .* --crop box cuts one square per face") as exc:
            CropSettings(**given)
        assert "\n" not in str(exc.value)
        with pytest.raises(InputError, match="--crop box"):
            WorkConfig.build(detector="haar", **given)
    assert CropSettings(crop="box").spread == 0 and CropSettings(crop="box", crop_spread=0).spread == 0
    assert CropSettings().spread == CropSettings(crop_spread=None).spread > 0
    from fer_export.batch.models import open_models

    with pytest.raises(InputError, match="has no framing"):  # the tiny export has none
        open_models(WorkConfig.build(model=str(exported["onnx"]), crop_spread=0.3))
    assert open_models(WorkConfig.build(model=str(exported["onnx"]), crop_spread=0))[1].framer.views == (1.0,)
    assert open_models(WorkConfig.build(model=str(exported["onnx"])))[1].framer.views == (1.0,)


def test_face_crops_carry_their_views():
    """A framer's crops know how many views each face has; a video frame's faces get one."""
    img = np.random.default_rng(5).integers(0, 255, (200, 200), dtype=np.uint8)
    boxes = [Face(20, 20, 60, 60), Face(110, 100, 70, 70)]
    framer = Framer(TEMPLATE, "yunet", CropSettings(crop_spread=0.1))
    cut = framer.crops(img, boxes, still=True)
    assert isinstance(cut, FaceCrops) and (len(cut), cut.views) == (6, 3)
    assert [c.shape for c in cut.crops[:3]] == [(75, 75), (68, 68), (82, 82)]  # 60 * 1.25, times 1, 0.9, 1.1
    assert (len(framer.crops(img, boxes)), framer.crops(img, boxes).views) == (2, 1)
    assert framer.crops(img, [], still=True).average(np.zeros((0, 7))).shape == (0, 7)
    assert Framer(None, "yunet", CropSettings(crop_spread=0.3)).views == (1.0,)  # box crops: one view


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
    assert crops.frame_face(big, large, sized).shape == (48, 48)
    assert crops.frame_face(big, large, TEMPLATE).shape[0] > 300  # no size: the face's own resolution
    assert crops.frame_face(big, small, sized).shape == crops.frame_face(big, small, TEMPLATE).shape  # never upscaled
    expected = cv2.resize(crops.frame_face(big, large, TEMPLATE), (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crops.frame_face(big, large, sized), expected)


def test_tracker_follows_a_face_that_moved_more_than_its_boxes_overlap():
    """Sampled sparsely (--video-fps 5 of a 25 fps video), a face moves more than its boxes overlap:
    IoU alone would give it a new id every frame."""
    tr = IouTracker()
    assert tr.update([(0, 0, 100, 100), (400, 0, 100, 100)]) == [0, 1]
    assert iou((60, 0, 100, 100), (0, 0, 100, 100)) < 0.3  # moved 0.6 of its side: no IoU match
    assert tr.update([(60, 0, 100, 100), (400, 70, 100, 100)]) == [0, 1]
    assert tr.update([(260, 0, 100, 100)]) == [2]  # two sides away: another face
    assert tr.update([(60, 0, 200, 200)]) == [3]  # twice the size where face 0 was: not the same face


# ---- --det-nms: the overlap above which boxes are one face ------------------------------------------

def test_det_nms_sets_which_boxes_are_merged(photos, yunet_model):
    """A lower --det-nms merges more: at 0 no two kept boxes overlap, at the default none overlap by more
    than it, and a high one keeps YuNet's near-duplicate boxes of one face. Both YuNet backends and
    the merge across detection sizes follow it."""
    img = cv2.imread(str(photos / "df_selfie-many-people.jpg"))  # a crowd: some faces overlap
    found = {nms: open_detector("yunet", yunet_model, det_nms=nms).detect(img) for nms in (0.0, 0.3, 0.9)}
    assert DetectionSettings().det_nms == 0.3
    assert len(found[0.0]) < len(found[0.3]) < len(found[0.9])
    def most_overlap(kept):
        return max(_iou(a, b) for a in kept for b in kept if a is not b)

    assert most_overlap(found[0.0]) == 0 and 0 < most_overlap(found[0.3]) <= 0.3 < most_overlap(found[0.9])
    loose = DetectionSettings(yunet_model=str(yunet_model), det_nms=0.9, min_face=0)
    ort_net = faces.YuNetDetector(yunet_model, backend="onnxruntime", settings=loose)
    cv_net = faces.YuNetDetector(yunet_model, backend="opencv", settings=loose)
    assert len(ort_net._detect(img)) == len(cv_net._detect(img)) > len(faces.YuNetDetector(yunet_model)._detect(img))
    sizes = {nms: open_detector("yunet", yunet_model, det_sizes=(320, 640), min_face=0, det_nms=nms).detect(img)
             for nms in (0.3, 0.9)}
    assert len(sizes[0.9]) > len(sizes[0.3])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.3", True])
def test_det_nms_outside_0_1_is_refused(bad):
    with pytest.raises(InputError, match="det_nms must be a number|NMS overlap must be in \\[0, 1\\)"):
        DetectionSettings(det_nms=bad)
    assert DetectionSettings(det_nms=0).det_nms == 0.0 and DetectionSettings(det_nms=0.99).det_nms == 0.99


def test_det_nms_is_recorded_only_when_not_the_default(yunet_model):
    """The journal keeps det_nms only when it differs from the default: a run resumed with another value
    is refused, and journals without the key mean the default."""
    plain = open_detector("yunet", yunet_model).recorded()
    assert "det_nms" not in plain and plain["det_threshold"] == 0.7
    assert open_detector("yunet", yunet_model, det_nms=0.5).recorded() == plain | {"det_nms": 0.5}
    assert open_detector("haar", det_nms=0.5).recorded()["det_nms"] == 0.5
