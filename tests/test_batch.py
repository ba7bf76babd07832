"""fer-batch end to end: the CSV contract, bad inputs, resume after kill -9, parity, torch-free."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import BLOCK_TORCH, ROOT
from fer_export.cli.batch import main
from fer_export.preprocess import read_gray
from fer_export.report import columns, journal_path, read_results
from fer_export.runtime import EmotionClassifier
from fer_export.spec import FER2013_LABELS
from test_sources import write_avi

NOFACE = "pyfeat_face_noface.mov"  # 169 frames at 26.4 fps; a real face, then a cartoon from ~frame 75


@pytest.fixture(scope="session")
def tiny_model(exported) -> Path:
    return exported["onnx"]


def batch(*args) -> "click.testing.Result":
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
    assert (images.status == "ok").all() and images.frame.isna().all() and len(images) >= 35
    for name, g in images.groupby("source"):
        w, h = Image.open(name).size
        assert ((g.x >= 0) & (g.y >= 0) & (g.x + g.w <= w) & (g.y + g.h <= h)).all(), name
    video = df[df.kind == "video"]
    assert sorted(video.frame.unique()) == list(range(0, 169, 20))
    assert np.allclose(video.timestamp_s, video.frame / 26.398, atol=2e-3)
    assert (video[video.frame < 60].status == "ok").all() and (video[video.frame >= 100].status == "no_face").all()
    assert (video[video.status == "ok"].track == 0).all()
    s = pd.read_csv(summary)
    assert set(s.detector) == {"yunet"} and len(s) == len(names) + 1  # + the video's one track
    row = s[(s.source == names[-1]) & s.track.isna()].iloc[0]
    assert (row.frames, row.faces, row.status) == (9, (video.status == "ok").sum(), "ok")
    assert len(list((tmp_path / "plots").rglob("*.png"))) == 1
    assert len(list((tmp_path / "ann").rglob("*.jpg"))) == 15 and len(list((tmp_path / "ann").rglob("*.mp4"))) == 1


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


def _kill_and_cut(out: Path, keep: int, cut_bytes: int) -> None:
    """Leave ``out`` as a kill -9 would: ``keep`` inputs journalled, a half-written row, a half journal line."""
    journal = journal_path(out)
    lines = journal.read_bytes().splitlines(keepends=True)
    end = json.loads(lines[keep - 1])["end"]
    out.write_bytes(out.read_bytes()[:end + cut_bytes])
    journal.write_bytes(b"".join(lines[:keep]) + lines[keep][:10])


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


def test_kill_9_then_resume_without_torch(tmp_path, tiny_model, videos, yunet_model):
    """A real kill -9 mid-run, in a process where torch cannot be imported."""
    data = tmp_path / "in"
    data.mkdir()
    for k in range(3):
        shutil.copy(videos / "pyfeat_single_face.mp4", data / f"v{k}.mp4")
    args = [data, "--model", tiny_model, "--yunet-model", yunet_model, "--every-n", 2, "--batch-size", 8]
    out = tmp_path / "r.csv"
    proc = run_cli_without_torch(*args, "--out", out)
    journal = journal_path(out)
    while proc.poll() is None and not (journal.is_file() and journal.read_bytes().count(b"\n") >= 1):
        time.sleep(0.01)
    assert journal.read_bytes().count(b"\n") < 3, "finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run_cli_without_torch(*args, "--out", out, "--resume")
    assert done.wait(timeout=300) == 0, done.stdout.read()
    clean = run_cli_without_torch(*args, "--out", tmp_path / "clean.csv")
    assert clean.wait(timeout=300) == 0, clean.stdout.read()
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert read_results(out).groupby("source").frame.nunique().tolist() == [36, 36, 36]


@pytest.mark.parametrize("args, message", [
    (["--provider", "cuda"], "CUDA"),
    (["--every-n", "2", "--video-fps", "5"], "not both"),
    (["--detector", "yunet"], "face_detection_yunet_2026may.onnx"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, tiny_model, photos, args, message):
    monkeypatch.delenv("FER_YUNET_MODEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv", "--model", tiny_model, *args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_default_model_missing_says_pass_model(tmp_path, monkeypatch, photos):
    monkeypatch.setattr("fer_export.pipeline.DEFAULT_MODEL", tmp_path / "absent.onnx")
    res = batch(photos / "fer_justin.jpg", "--out", tmp_path / "r.csv")
    assert res.exit_code == 2 and "--model" in res.output


def test_help_documents_defaults():
    text = CliRunner().invoke(main, ["--help"]).output
    for needle in ("--detector [auto|yunet|haar|none]", "default: auto", "default: 32", "Exit status",
                   "FER_YUNET_MODEL", "--resume", "64 px"):
        assert needle in text, needle
