"""fer-batch end to end: the CSV contract, bad inputs, resume after kill -9, parity, torch-free."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from conftest import BLOCK_TORCH, ROOT
from fer_export.batch import BatchConfig, CropSettings, DetectionSettings, ModelSettings, SamplingSettings, WorkConfig
from fer_export.batch.results import columns, journal_path, read_results
from fer_export.cli.batch import main
from fer_export.errors import InputError
from fer_export.preprocess import read_gray
from fer_export.runtime import BUNDLED_MODELS
from fer_export.runtime import EmotionClassifier
from fer_export.spec import FER2013_LABELS
from test_sources import write_avi

NOFACE = "pyfeat_face_noface.mov"  # 169 frames at 26.4 fps; a real face, then a cartoon from ~frame 75


@pytest.fixture(scope="session")
def tiny_model(exported) -> Path:
    return exported["onnx"]


def batch(*args) -> Result:
    return CliRunner().invoke(main, [*map(str, args), "--no-progress"])


def fer_crops(fer2013: Path, per_class: int) -> list[Path]:
    return [p for label in FER2013_LABELS for p in sorted((fer2013 / "val" / label).glob("*.jpg"))[:per_class]]


def check_rows(df: pd.DataFrame) -> None:
    """Probabilities of face rows sum to 1 and their argmax is the emotion; other rows are empty."""
    assert list(df.columns) == columns(FER2013_LABELS)
    ok = df[df.status == "ok"]
    probs = ok[list(FER2013_LABELS)].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (np.array(FER2013_LABELS)[probs.argmax(axis=1)] == ok.emotion).all()
    assert df[df.status != "ok"][["face", "x", "emotion", *FER2013_LABELS]].isna().all().all()


def test_photos_and_video(tmp_path, tiny_model, photos, videos, yunet_model):
    out, summary = tmp_path / "r.csv", tmp_path / "s.csv"
    res = batch(photos, videos / NOFACE, "--out", out, "--model", tiny_model, "--yunet-model", yunet_model,
                "--every-n", 20, "--summary", summary, "--plots", tmp_path / "plots", "--annotate", tmp_path / "ann")
    assert res.exit_code == 0, res.output
    assert "on cpu" in res.output and "detector yunet" in res.output
    df = read_results(out)
    check_rows(df)
    names = [f"{photos}/{p.name}" for p in sorted(photos.iterdir())] + [f"{videos / NOFACE}"]
    assert list(df.source.unique()) == names  # every input, in input order
    images = df[df.kind == "image"]
    assert (images.status == "ok").all() and images.frame.isna().all()
    assert len(images) > images.source.nunique()  # a face or more in each photo, several in group photos
    for name, g in images.groupby("source"):
        w, h = Image.open(name).size
        assert ((g.x >= 0) & (g.y >= 0) & (g.x + g.w <= w) & (g.y + g.h <= h)).all(), name
    video = df[df.kind == "video"]
    assert sorted(video.frame.unique()) == list(range(0, 169, 20))
    assert list(video.timestamp_s) == [0, 0.667, 1.333, 2, 2.694, 3.527, 4.36, 5.194, 6.027]  # the decoder's: variable frame rate
    assert (video[video.frame < 60].status == "ok").all() and (video[video.frame >= 100].status == "no_face").all()
    assert (video[video.status == "ok"].track == 0).all()
    s = pd.read_csv(summary)
    assert set(s.detector) == {"yunet"} and len(s) == len(names) + 1  # + the video's one track
    row = s[(s.source == names[-1]) & s.track.isna()].iloc[0]
    assert (row.frames, row.faces, row.status) == (9, (video.status == "ok").sum(), "ok")
    assert len(list((tmp_path / "plots").rglob("*.png"))) == 1
    jpgs = sum(1 for p in photos.iterdir() if p.suffix == ".jpg")
    assert len(list((tmp_path / "ann").rglob("*.jpg"))) == jpgs and len(list((tmp_path / "ann").rglob("*.mp4"))) == 1


def test_haar_detector(tmp_path, tiny_model, photos):
    res = batch(photos / "fer_justin.jpg", photos / "pyfeat_single_face.jpg", "--detector", "haar",
                "--out", tmp_path / "r.csv", "--model", tiny_model)
    assert res.exit_code == 0, res.output
    df = read_results(tmp_path / "r.csv")
    assert (df.status == "ok").all() and df.det_score.isna().all() and df.source.nunique() == 2


def test_bad_inputs_give_error_rows_and_exit_1(tmp_path, tiny_model, photos, videos, yunet_model):
    data = tmp_path / "in"
    data.mkdir()
    shutil.copy(photos / "fer_justin.jpg", data / "good.jpg")
    face = cv2.imread(str(photos / "fer_justin.jpg"))
    cv2.imwrite(str(data / "good16.tif"), face.astype(np.uint16) * 257)  # 16-bit
    cv2.imwrite(str(data / "good.webp"), face)
    (data / "empty.jpg").write_bytes(b"")
    (data / "text.png").write_text("not an image\n")
    mp4 = (videos / "pyfeat_single_face.mp4").read_bytes()
    (data / "half.mp4").write_bytes(mp4[:len(mp4) // 2])  # moov atom at the end: nothing decodes
    write_avi(data / "half.avi", truncate=True)  # the first frames decode
    res = batch(data, "--out", tmp_path / "r.csv", "--model", tiny_model, "--yunet-model", yunet_model)
    assert res.exit_code == 1, res.output
    df = read_results(tmp_path / "r.csv")
    check_rows(df)
    status = df.groupby("source").status.agg(list).to_dict()
    name = lambda f: f"{data}/{f}"  # noqa: E731
    for good in ("good.jpg", "good16.tif", "good.webp"):
        assert status[name(good)] == ["ok"], good
    for bad in ("empty.jpg", "text.png", "half.mp4"):
        assert status[name(bad)] == ["error"]
    avi = status[name("half.avi")]
    assert avi[-1] == "error" and 0 < len(avi) - 1 < 20 and set(avi[:-1]) == {"no_face"}
    errors = df[df.status == "error"].set_index("source").error
    assert "empty (0 bytes)" in errors[name("empty.jpg")] and "not a readable image" in errors[name("text.png")]
    assert "cannot open" in errors[name("half.mp4")] and "truncated" in errors[name("half.avi")]
    assert "4 error" in res.output and "FAILED" in res.output


def test_detector_none_matches_the_classifier(tmp_path, tiny_model, fer2013):
    crops = fer_crops(fer2013, 3)
    expected = EmotionClassifier(tiny_model, "cpu").predict([read_gray(p) for p in crops])
    for detector in ("none", "auto"):  # auto: crops of <= 64 px are classified whole anyway
        out = tmp_path / f"{detector}.csv"
        res = batch(*crops, "--detector", detector, "--out", out, "--model", tiny_model, "--batch-size", 4)
        assert res.exit_code == 0, res.output
        df = read_results(out)
        assert list(df.source) == list(map(str, crops)) and (df.status == "ok").all()
        assert (df[["x", "y", "w", "h"]] == [0, 0, 48, 48]).all().all()
        np.testing.assert_allclose(df[list(FER2013_LABELS)].to_numpy(), expected, atol=2e-6)


def test_workers_and_runs_of_images_change_nothing(tmp_path, tiny_model, fer2013, photos, videos, yunet_model):
    """Workers classify runs of consecutive images themselves; how the inputs fall into runs, and how
    many workers there are, changes no row. A bad image inside a run costs only its own row."""
    data = tmp_path / "in"
    data.mkdir()
    crops = fer_crops(fer2013, 3)
    for k, p in enumerate(crops):
        shutil.copy(p, data / f"a{k:02d}.jpg")
    (data / "a10_bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copy(photos / "fer_justin.jpg", data / "b_photo.jpg")
    shutil.copy(videos / NOFACE, data / "c_video.mov")
    shutil.copy(crops[0], data / "d_after_video.jpg")
    frames = {}
    for workers, size in ((1, 32), (2, 3), (3, 1)):
        out = tmp_path / f"w{workers}.csv"
        res = batch(data, "--out", out, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 40,
                    "--workers", workers, "--batch-size", size)
        assert res.exit_code == 1 and "1 error" in res.output, res.output
        frames[workers] = df = read_results(out)
        check_rows(df)
    first = frames[1]
    assert list(first.source.unique()) == [str(p) for p in sorted(data.iterdir())]
    assert first.set_index("source").status[str(data / "a10_bad.jpg")] == "error"
    for df in frames.values():
        assert df.drop(columns=list(FER2013_LABELS) + ["confidence"]).equals(
            first.drop(columns=list(FER2013_LABELS) + ["confidence"]))
        np.testing.assert_allclose(df[list(FER2013_LABELS)].to_numpy(float), first[list(FER2013_LABELS)].to_numpy(float),
                                   atol=2e-6, equal_nan=True)


def test_uint8_model_with_preprocessing_inside(tmp_path, tiny_ckpt, tiny_model, fer2013, photos, yunet_model):
    """A --with-preprocessing graph (raw uint8 crops of any size) runs through fer-batch: crops of
    different sizes in one batch, and faces found in photos; the same emotions as the float graph."""
    from fer_export.cli.export import main as fer_export

    raw_model = tmp_path / "raw.onnx"
    res = CliRunner().invoke(fer_export, ["onnx", str(tiny_ckpt), "-o", str(raw_model), "--with-preprocessing"])
    assert res.exit_code == 0, res.output
    crops = fer_crops(fer2013, 2)
    big = tmp_path / "big.png"  # a 60x60 crop: another size in the same batch, still classified whole
    cv2.imwrite(str(big), cv2.resize(read_gray(crops[0]), (60, 60)))
    inputs = [*crops, big, photos / "fr_two_people.jpg"]
    for name, model in (("raw", raw_model), ("float", tiny_model)):
        res = batch(*inputs, "--out", tmp_path / f"{name}.csv", "--model", model, "--yunet-model", yunet_model,
                    "--batch-size", 4)
        assert res.exit_code == 0, res.output
    raw, flt = read_results(tmp_path / "raw.csv"), read_results(tmp_path / "float.csv")
    check_rows(raw)
    pd.testing.assert_frame_equal(raw[["source", "face", "x", "y", "w", "h"]], flt[["source", "face", "x", "y", "w", "h"]])
    assert len(raw[raw.source == str(photos / "fr_two_people.jpg")]) >= 2
    expected = EmotionClassifier(raw_model, "cpu").predict([read_gray(p) for p in crops])
    np.testing.assert_allclose(raw[list(FER2013_LABELS)].to_numpy()[:len(crops)], expected, atol=2e-6)
    np.testing.assert_allclose(raw[list(FER2013_LABELS)].to_numpy(), flt[list(FER2013_LABELS)].to_numpy(), atol=0.02)


def test_video_fps_end_to_end(tmp_path, tiny_model, videos, yunet_model):
    out = tmp_path / "r.csv"
    res = batch(videos / "pyfeat_single_face.mp4", "--out", out, "--model", tiny_model, "--yunet-model",
                yunet_model, "--video-fps", 4)
    assert res.exit_code == 0, res.output
    df = read_results(out)
    assert list(df.frame) == [0, 8, 15, 23, 30, 38, 45, 53, 60, 68]  # 30 fps video, 4 frames a second: 7.5 apart
    np.testing.assert_allclose(df.timestamp_s, df.frame / 30, atol=1e-3)
    assert (df.status == "ok").all() and (df.track == 0).all()


def test_max_faces_keeps_the_largest(tmp_path, tiny_model, photos, yunet_model):
    args = [photos / "pyfeat_multi_face.jpg", "--model", tiny_model, "--yunet-model", yunet_model]
    assert batch(*args, "--out", tmp_path / "all.csv").exit_code == 0
    assert batch(*args, "--out", tmp_path / "two.csv", "--max-faces", 2).exit_code == 0
    every, two = read_results(tmp_path / "all.csv"), read_results(tmp_path / "two.csv")
    largest = every.assign(area=every.w * every.h).nlargest(2, "area").sort_values(["x", "y"])
    assert len(every) > 2 and list(two.face) == [0, 1]
    np.testing.assert_array_equal(two[["x", "y", "w", "h"]], largest[["x", "y", "w", "h"]])


def test_pictures_get_a_second_look_and_video_frames_do_not(tmp_path, tiny_model, small_face, yunet_model):
    """The small face that YuNet finds only enlarged (test_faces) is found in a picture by default, not
    with --look-again 1, and not in a video made of that picture; the rows keep source pixels."""
    picture, width = small_face
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "small face.png"), picture)
    video = cv2.VideoWriter(str(tmp_path / "in" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (1920, 1440))
    for _ in range(3):
        video.write(picture)
    video.release()
    args = [tmp_path / "in", "--model", tiny_model, "--yunet-model", yunet_model]
    assert batch(*args, "--out", tmp_path / "r.csv").exit_code == 0
    assert batch(*args, "--out", tmp_path / "once.csv", "--look-again", 1).exit_code == 0
    rows, once = read_results(tmp_path / "r.csv"), read_results(tmp_path / "once.csv")
    still = rows[rows.source.str.endswith("small face.png")]
    assert list(still.status) == ["ok"] and 900 < still.x.iloc[0] < 900 + width and still.w.iloc[0] >= 25
    assert set(rows[rows.source.str.endswith("clip.avi")].status) == {"no_face"}
    assert set(once.status) == {"no_face"} and len(once) == 4


@pytest.mark.parametrize("options, message", [
    (dict(resume=True, overwrite=True), "not both"),
    (dict(every_n=2, video_fps=5.0), "not both"),
    (dict(batch_size=0), "batch size"),
    (dict(max_faces=0), "max faces"),
    (dict(detector="dlib"), "detector must be one of"),
    (dict(det_sizes=(32,)), "at least 64 px"),
    (dict(look_again=0.5), "look again"),
    (dict(look_again=float("nan")), "look again"),
    (dict(look_again="twice"), "look_again must be a number"),
    (dict(det_sizes=("big",)), "det_sizes must be whole numbers"),
    (dict(det_nms=1.0), "NMS overlap must be in"),
    (dict(crop="box", crop_spread=0.2), "--crop box cuts one square per face"),
    (dict(every_n=2, video_fps=5.0, batch_size=0, det_nms=-1), "batch size.*; .*NMS overlap.*; .*not both"),
    (dict(det_threshold=0.5, nms=0.2), "unknown batch options \\['nms'\\]"),
])
def test_config_rules_hold_for_library_callers(options, message):
    with pytest.raises(InputError, match=message):
        BatchConfig.build(["x.jpg"], "r.csv", **options)


def test_config_is_frozen_and_hashable():
    cfg = BatchConfig.build(["in"], "r.csv", detector="haar", det_sizes=[640, 1280], yunet_model=Path("y.onnx"),
                            every_n=3, crop="box", batch_size=8, workers=2)
    nested = WorkConfig(detection=DetectionSettings(detector="haar", det_sizes=(640, 1280), yunet_model="y.onnx"),
                        sampling=SamplingSettings(every_n=3), crops=CropSettings(crop="box"),
                        model=ModelSettings(batch_size=8))
    assert cfg.work == nested and hash(cfg.work) == hash(nested) and cfg.workers == 2
    assert cfg.work == WorkConfig.build(detector="haar", det_sizes=(640, 1280), yunet_model="y.onnx", every_n=3,
                                        crop="box", batch_size=8)
    assert cfg.work.detection.det_nms == DetectionSettings().det_nms and cfg.work.model.threads is None
    with pytest.raises(AttributeError):
        cfg.work.detection.detector = "none"
    with pytest.raises(AttributeError):
        cfg.work.detection = DetectionSettings()
    with pytest.raises(InputError, match="WorkConfig.build"):
        WorkConfig(detection={"detector": "haar"})


def _kill_and_cut(out: Path, keep: int, cut_bytes: int) -> None:
    """Leave ``out`` as a kill -9 would: ``keep`` inputs journalled, a half-written row, a half journal line."""
    journal = journal_path(out)
    head, *lines = journal.read_bytes().splitlines(keepends=True)  # the first line records the run's settings
    assert b'"run"' in head
    end = json.loads(lines[keep - 1])["end"]
    out.write_bytes(out.read_bytes()[:end + cut_bytes])
    journal.write_bytes(head + b"".join(lines[:keep]) + lines[keep][:10])


def test_resume_after_interruption_equals_a_clean_run(tmp_path, tiny_model, fer2013):
    crops = fer_crops(fer2013, 2)
    args = [*crops, "--model", tiny_model, "--batch-size", 4]
    assert batch(*args, "--out", tmp_path / "clean.csv").exit_code == 0
    clean = (tmp_path / "clean.csv").read_bytes()
    out = tmp_path / "r.csv"
    shutil.copy(tmp_path / "clean.csv", out)
    shutil.copy(journal_path(tmp_path / "clean.csv"), journal_path(out))
    _kill_and_cut(out, keep=5, cut_bytes=70)
    res = batch(*args, "--out", out)
    assert res.exit_code == 2 and "--resume" in res.output  # never silently overwritten
    res = batch(*args, "--out", out, "--resume")
    assert res.exit_code == 0 and "5 done by an earlier run" in res.output, res.output
    assert out.read_bytes() == clean
    res = batch(*args, "--out", out, "--resume")  # nothing left to do
    assert "14 done by an earlier run" in res.output and out.read_bytes() == clean


def run_cli_without_torch(*args) -> subprocess.Popen:
    code = BLOCK_TORCH + "from fer_export.cli.batch import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)], ids=["kill-9", "ctrl-c"])
def test_killed_or_interrupted_then_resume_without_torch(tmp_path, tiny_model, videos, yunet_model, sig, code):
    """A real kill -9 or Ctrl-C mid-run, in a process where torch cannot be imported; Ctrl-C exits
    130 with a line saying how to continue."""
    data = tmp_path / "in"
    data.mkdir()
    for k in range(4):
        shutil.copy(videos / "pyfeat_single_face.mp4", data / f"v{k}.mp4")
    args = [data, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 2, "--batch-size", 8,
            "--workers", 1]  # one input after the other: the signal lands mid-run
    out = tmp_path / "r.csv"
    proc = run_cli_without_torch(*args, "--out", out)
    journal = journal_path(out)
    while proc.poll() is None and not (journal.is_file() and journal.read_bytes().count(b"\n") >= 2):
        time.sleep(0.01)
    assert journal.read_bytes().count(b"\n") < 5, "finished before the signal"  # the run line + 4 inputs
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == code and "Traceback" not in output, output
    if sig == signal.SIGINT:
        assert "rerun the same command with --resume" in output, output
    done = run_cli_without_torch(*args, "--out", out, "--resume")
    assert done.wait(timeout=300) == 0, done.stdout.read()
    clean = run_cli_without_torch(*args, "--out", tmp_path / "clean.csv")
    assert clean.wait(timeout=300) == 0, clean.stdout.read()
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert read_results(out).groupby("source").frame.nunique().tolist() == [36, 36, 36, 36]


def test_ctrl_c_twice_ends_at_once_and_resume_finishes(tmp_path, tiny_model, videos, yunet_model):
    """A second Ctrl-C while the first one's cleanup runs (made slow here) ends the process at once with
    exit 130 and a line saying so: no traceback, no abort of a thread still in native code; --resume
    then finishes the run."""
    data = tmp_path / "in"
    data.mkdir()
    for k in range(3):
        shutil.copy(videos / "pyfeat_single_face.mp4", data / f"v{k}.mp4")
    out = tmp_path / "r.csv"
    args = [data, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 2, "--workers", 1, "--out", out]
    slow_cleanup = ("import time; from fer_export.batch.results import ResultsWriter; close = ResultsWriter.close; "
                    "ResultsWriter.close = lambda self: (time.sleep(2), close(self)); ")
    proc = subprocess.Popen([sys.executable, "-c", BLOCK_TORCH + slow_cleanup + "from fer_export.cli.batch import main; main()",
                             *map(str, args), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    journal = journal_path(out)
    while proc.poll() is None and not (journal.is_file() and journal.read_bytes().count(b"\n") >= 2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "interrupted again, stopped at once" in output, output
    assert "Traceback" not in output and "terminate" not in output and "--resume" in output, output
    done = run_cli_without_torch(*args, "--resume")
    assert done.wait(timeout=300) == 0, done.stdout.read()
    assert read_results(out).groupby("source").frame.nunique().tolist() == [36, 36, 36]


def test_ctrl_c_waits_for_the_models_still_opening(tmp_path, monkeypatch, tiny_model, videos, yunet_model):
    """Ctrl-C before the models are all open: the run returns only once the thread opening them has
    finished (one left inside onnxruntime aborts the process as the interpreter shuts down)."""
    from fer_export.batch import local, runner

    real = EmotionClassifier.sibling

    def slow(*args, **kwargs):  # the workers' shared session, still being built when Ctrl-C comes
        time.sleep(0.5)
        return real(*args, **kwargs)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(EmotionClassifier, "sibling", slow)
    monkeypatch.setattr(runner, "start", ctrl_c)
    config = BatchConfig.build([videos / "pyfeat_single_face.mp4"], tmp_path / "r.csv", model=tiny_model,
                               yunet_model=yunet_model)
    with pytest.raises(KeyboardInterrupt):
        local.run_local(config)
    assert not [t for t in threading.enumerate() if t.name.startswith("fer-batch")]


def test_faces_in_pictures_are_the_average_of_their_views(tmp_path, framed_model, photos, videos, yunet_model):
    """Through fer-batch: a picture's framed face gets the mean probabilities of its three views, a
    video frame's face its one crop; resuming with another --crop-spread is refused."""
    from fer_export.batch.models import open_models
    from fer_export.batch.per_input import faces_in

    photo, video = photos / "fr_two_people.jpg", videos / "pyfeat_single_face.mp4"
    out = tmp_path / "r.csv"
    res = batch(photo, video, "--out", out, "--model", framed_model, "--yunet-model", yunet_model, "--every-n", 12)
    assert res.exit_code == 0, res.output
    df = read_results(out)
    check_rows(df)
    clf, det = open_models(WorkConfig.build(model=str(framed_model), yunet_model=str(yunet_model)))
    img = cv2.imread(str(photo))
    _, crops = faces_in(img, det, still=True)
    assert crops.views == 3
    expected = clf.predict(crops.crops).reshape(-1, 3, len(FER2013_LABELS)).mean(axis=1)
    np.testing.assert_allclose(df[df.source == str(photo)][list(FER2013_LABELS)].to_numpy(float), expected, atol=2e-6)
    first = df[(df.source == str(video)) & (df.status == "ok")].iloc[0]
    frame = cv2.VideoCapture(str(video)).read()[1]
    single = clf.predict(faces_in(frame, det)[1].crops)[0]
    np.testing.assert_allclose(first[list(FER2013_LABELS)].to_numpy(float), single, atol=2e-6)
    res = batch(photo, "--out", out, "--model", framed_model, "--yunet-model", yunet_model, "--every-n", 12,
                "--resume", "--crop-spread", 0)
    assert res.exit_code == 2 and "crop_spread 0.22 -> None" in res.output, res.output


@pytest.mark.parametrize("args, message", [
    (["--provider", "cuda"], "CUDA"),
    (["--every-n", "2", "--video-fps", "5"], "not both"),
    (["--detector", "yunet", "--yunet-model", __file__], "OpenCV cannot load this YuNet model"),
    (["--crop", "box", "--crop-spread", "0.3"], "--crop-spread 0.3 applies to framed crops, and --crop box"),
    (["--crop-spread", "0.3"], "this model's spec has no framing"),
    (["--det-nms", "1"], "--det-nms"),
    (["--det-nms", "nan"], "--det-nms"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, tiny_model, photos, args, message):
    monkeypatch.delenv("FER_YUNET_MODEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", tiny_model, *args)
    last = res.output.strip().splitlines()[-1]  # click's own usage errors come after its usage lines
    assert res.exit_code == 2 and last.startswith("Error: ") and message in last, res.output
    assert not (tmp_path / "r.csv").exists()


def test_det_nms_end_to_end(tmp_path, tiny_model, photos, yunet_model):
    """--det-nms reaches the detector (a high one keeps near-duplicate boxes as faces), is recorded in the
    journal, and a run resumed with another value is refused."""
    photo = photos / "df_selfie-many-people.jpg"
    rows = {}
    for nms in ("0.3", "0.9"):
        out = tmp_path / f"{nms}.csv"
        res = batch(photo, "--out", out, "--model", tiny_model, "--yunet-model", yunet_model, "--det-nms", nms)
        assert res.exit_code == 0, res.output
        rows[nms] = read_results(out)
    default = tmp_path / "default.csv"
    assert batch(photo, "--out", default, "--model", tiny_model, "--yunet-model", yunet_model).exit_code == 0
    assert default.read_bytes() == (tmp_path / "0.3.csv").read_bytes()  # 0.3 is the default
    assert len(rows["0.9"]) > len(rows["0.3"]) and (rows["0.9"].status == "ok").all()
    run = json.loads(journal_path(tmp_path / "0.9.csv").read_text().splitlines()[0])["run"]
    assert run["det_nms"] == 0.9 and "det_nms" not in json.loads(journal_path(default).read_text().splitlines()[0])["run"]
    res = batch(photo, "--out", tmp_path / "0.9.csv", "--model", tiny_model, "--yunet-model", yunet_model, "--resume")
    assert res.exit_code == 2 and "det_nms 0.9 -> None" in res.output, res.output


@pytest.mark.parametrize("name", [[], ["--model", "fast"]])
def test_a_missing_bundled_model_says_pass_model(tmp_path, monkeypatch, photos, name):
    for tier in ("accurate", "fast"):
        absent = tmp_path / f"absent_{tier}.onnx"
        monkeypatch.setitem(BUNDLED_MODELS, tier, {"cpu": absent, "cuda": absent})
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", *name)
    assert res.exit_code == 2 and "--model PATH" in res.output and "absent" in res.output, res.output


def test_model_is_a_bundled_name_or_an_existing_file(tmp_path, photos):
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", "quick")
    assert res.exit_code == 2 and "accurate" in res.output and "fast" in res.output, res.output
    assert not (tmp_path / "r.csv").exists()


def test_help_documents_defaults():
    text = " ".join(CliRunner().invoke(main, ["--help"]).output.split())  # as read, not as wrapped
    for needle in ("--detector [auto|yunet|haar|none]", "default: auto", "default: 32", "Exit status",
                   "FER_YUNET_MODEL", "--resume", "64 px", "--det-nms", "default: 0.3;", "Detection: --detector"):
        assert needle in text, needle


def test_onnxruntime_threads_leave_half_the_cores_to_haar_only(monkeypatch):
    from fer_export.batch.models import model_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert model_threads(WorkConfig.build(detector="haar")) == 2  # OpenCV's cascade runs on every core
    assert model_threads(WorkConfig.build(detector="yunet")) is None  # onnxruntime's default: every core
    assert model_threads(WorkConfig.build(detector="none")) is None
    assert model_threads(WorkConfig.build(detector="haar", threads=3)) == 3
