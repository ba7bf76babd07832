"""Every face in a photo, in Node.js and in the page, as ``fer-batch --detector yunet`` finds and labels it.

``examples/faces.mjs`` ports fer-batch's picture path to JavaScript (YuNet's decoding and NMS, the
box mapped back to the picture, the model's framing with OpenCV's INTER_AREA and warpAffine, three
views per face) and ``examples/pipeline.mjs`` runs it with either host's onnxruntime. On the shared
photos, with the bundled model made embeddable (``fer-export embed``), both hosts must give
fer-batch's faces (boxes within BOX_PX), its emotions, and its probabilities within PROB_ATOL.

What the hosts do not do: fer-batch's second look (a picture in which nothing is found is searched
again enlarged, mirrored and turned). :func:`test_no_shared_photo_needs_a_second_look` shows that none
of the shared photos reaches it, so the comparison covers every rule these photos exercise.

The camera mode runs on Chromium's fake camera fed from a shared video (a .y4m written here with
OpenCV): faces are labelled and frames/s is reported. Needs what tests/test_embed.py needs.
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_export import EmotionClassifier
from fer_export.batch import crops, settings, sources, yunet
from fer_export.batch.faces import open_detector
from fer_export.spec import Framing

import test_embed
from test_embed import CHROMIUM, EXAMPLES, TIMEOUT, unavailable

# tests/test_embed.py's fixtures: Node.js and the npm packages, the page's server, the embeddable bundled model
node, examples_server, bundled_embed = test_embed.node, test_embed.examples_server, test_embed.bundled_embed

#: fer-batch rounds boxes to whole pixels, so a box off by more than this is another box.
BOX_PX = 2
#: The same graph on onnxruntime-node and onnxruntime-web (WebAssembly) against Python's onnxruntime:
#: the same crops give the same probabilities to about 1e-6, and the CSV keeps six decimals.
PROB_ATOL = 1e-3
VIDEO = "fer_woman2.mp4"  # a talking head: one face in every frame
CAMERA_FRAMES = 60
CAMERA_SECONDS = 4
DEFAULT_DET_SIZE = 640  # one detection size: the hosts detect at one size only


def node_module(node: str, code: str, *args) -> str:
    """Run ES module ``code`` in examples/ (its imports are relative to it); its stdout."""
    proc = subprocess.run([node, "--input-type=module", "-e", code, *map(str, args)], cwd=EXAMPLES,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ---- the reference: fer-batch itself ---------------------------------------------------------------

@pytest.fixture(scope="module")
def fer_batch_rows(photos, bundled_embed, tmp_path_factory) -> list[dict]:
    """``fer-batch PHOTOS --detector yunet --model EMBED``: its CSV rows, the reference."""
    out = tmp_path_factory.mktemp("fer_batch") / "photos.csv"
    proc = subprocess.run([sys.executable, "-m", "fer_export.cli.batch", str(photos), "--out", str(out),
                           "--detector", "yunet", "--model", str(bundled_embed), "--no-progress"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    return rows


def compare(reference: list[dict], got: list[dict], labels: list[str]) -> list[str]:
    """Every way ``got`` (rows of source, face, x, y, w, h, emotion, probs) differs from fer-batch's rows."""
    problems = []
    want = {(r["source"], int(r["face"])): r for r in reference}
    have = {(g["source"], int(g["face"])): g for g in got}
    if set(want) != set(have):
        problems.append(f"faces differ: missing {sorted(set(want) - set(have))}, extra {sorted(set(have) - set(want))}")
    for key in sorted(set(want) & set(have)):
        r, g = want[key], have[key]
        off = max(abs(int(r[k]) - int(g[k])) for k in "xywh")
        diff = max(abs(float(r[label]) - float(g["probs"][label])) for label in labels)
        if off > BOX_PX or r["emotion"] != g["emotion"] or diff > PROB_ATOL:
            problems.append(f"{key}: box {[r[k] for k in 'xywh']} vs {[g[k] for k in 'xywh']}, "
                            f"{r['emotion']} vs {g['emotion']}, max |d prob| {diff:.2g}")
    return problems


def test_no_shared_photo_needs_a_second_look(photos, yunet_model):
    """fer-batch searches a picture again only when its first look finds no face; the hosts have no
    second look, so every shared photo must have a face at the first look."""
    detector = open_detector(settings.DetectionSettings(detector="yunet", yunet_model=str(yunet_model)))
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(files) >= 10
    first_look = {p.name: len(detector.detect(cv2.imread(str(p)), still=False)) for p in files}
    assert all(first_look.values()), f"photos that need fer-batch's second look: {first_look}"


# ---- Node.js -------------------------------------------------------------------------------------

def test_node_finds_and_labels_fer_batchs_faces(node, bundled_embed, photos, fer_batch_rows):
    """``node/classify.mjs --detect --format csv`` on the photos folder: fer-batch's CSV columns and rows."""
    proc = subprocess.run([node, "node/classify.mjs", "--model", str(bundled_embed), "--detect", "--format", "csv",
                           str(photos)], cwd=EXAMPLES, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert header == ",".join(fer_batch_rows[0].keys())
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    labels = header.split(",")[13:-2]
    got = [{**r, "probs": {label: r[label] for label in labels}} for r in rows]
    assert compare(fer_batch_rows, got, labels) == []
    assert [r["det_score"] for r in rows] == [r["det_score"] for r in fer_batch_rows]


def test_node_detect_records_no_face_and_bad_files(node, bundled_embed, fer2013, tmp_path):
    """A picture without a face gets a no_face row, an unreadable one an error row (exit 1); a face
    crop (both sides <= 64 px) is classified whole, as fer-batch does."""
    blank = np.full((240, 320, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "blank.png"), blank)
    crop = sorted((fer2013 / "val" / "happy").glob("*.jpg"))[0]
    (tmp_path / "crop.jpg").write_bytes(crop.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    proc = subprocess.run([node, "node/classify.mjs", "--model", str(bundled_embed), "--detect", str(tmp_path)],
                          cwd=EXAMPLES, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    rows = {Path(r["source"]).name: r for r in json.loads(proc.stdout)["rows"]}
    assert rows["blank.png"]["status"] == "no_face"
    assert rows["broken.jpg"]["status"] == "error" and rows["broken.jpg"]["error"]
    whole = rows["crop.jpg"]
    assert (whole["status"], whole["x"], whole["y"], whole["w"], whole["h"]) == ("ok", 0, 0, 48, 48)
    expected = EmotionClassifier(bundled_embed, provider="cpu").predict([cv2.imread(str(crop), cv2.IMREAD_GRAYSCALE)])[0]
    assert np.abs(np.array(list(whole["probs"].values())) - expected).max() <= PROB_ATOL


def test_node_detect_refuses_a_file_that_is_not_yunet(node, bundled_embed, tmp_path):
    proc = subprocess.run([node, "node/classify.mjs", "--model", str(bundled_embed), "--detect", "--yunet",
                           str(bundled_embed), "x.jpg"], cwd=EXAMPLES, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "not a YuNet model" in proc.stderr, proc.stderr


# ---- the ports, piece by piece ---------------------------------------------------------------------

def test_javascript_defaults_are_fer_batchs(node):
    """The page and the Node.js program restate fer-batch's defaults; they must not drift."""
    out = json.loads(node_module(node, "import {DEFAULTS, YUNET_OUTPUTS} from './faces.mjs';"
                                       "console.log(JSON.stringify({...DEFAULTS, outputs: YUNET_OUTPUTS}));"))
    detection = settings.DetectionSettings()
    assert out == {"detSize": settings.DET_SIZES[0], "threshold": detection.det_threshold, "minFace": detection.min_face,
                   "cropSpread": settings.CropSettings().spread, "nmsIou": detection.det_nms, "topK": yunet.YUNET_TOP_K,
                   "cropMaxSide": sources.CROP_MAX_SIDE, "cropMargin": crops.CROP_MARGIN,
                   "framedSides": list(crops.FRAMED_SIDES), "outputs": list(yunet.YUNET_OUTPUTS)}
    assert detection.det_sizes == settings.DET_SIZES == (DEFAULT_DET_SIZE,) and detection.max_faces is None


def test_pixel_ports_match_opencv(node, photos, tmp_path):
    """INTER_AREA shrinks (whole and fractional ratios, gray and colour) and the framed crops (box rule,
    edges, views; a landmark warp for a framing without YuNet's rule) against OpenCV and frame_face."""
    rng = np.random.default_rng(0)
    photo = cv2.imread(str(photos / "fr_two_people.jpg"))
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    jobs, expected = [], []
    for i, (src, size) in enumerate([(photo, (640, 376)), (photo[:400, :600], (300, 200)), (gray, (563, 330)),
                                     (photo[:300, :300], (48, 48)), (gray[:97, :97], (48, 48))]):
        path = tmp_path / f"area{i}.raw"
        np.ascontiguousarray(src[:, :, ::-1] if src.ndim == 3 else src).tofile(path)
        jobs.append({"op": "area", "file": str(path), "w": src.shape[1], "h": src.shape[0],
                     "c": 1 if src.ndim == 2 else 3, "size": size})
        expected.append(cv2.resize(src, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)[:, :, ::-1])
    gray_path = tmp_path / "gray.raw"
    gray.tofile(gray_path)
    yunet_rule = Framing.from_dict({"landmarks": [0.3248, 0.3746, 0.6752, 0.3746, 0.5, 0.5899, 0.3582, 0.7534, 0.6418, 0.7534],
                                    "box": [0.0026, 0.0052, 1.0267], "size": 48, "detector_boxes": {"yunet": [0.0, 0.0051, 0.9846]}})
    landmark_only = Framing(yunet_rule.landmarks, yunet_rule.box, 48)
    h, w = gray.shape
    faces = [crops.Face(241, 31, 142, 196), crops.Face(0, 0, 60, 80), crops.Face(w - 30, h - 40, 30, 40)]
    faces += [crops.Face(int(x), int(y), int(s), int(s * 1.3)) for x, y, s in
              zip(rng.integers(0, w - 100, 6), rng.integers(0, h - 100, 6), rng.integers(20, 300, 6))]
    tilted = crops.Face(787, 48, 149, 207, 0.9, (826.0, 142.0, 893.0, 150.0, 857.0, 188.0, 829.0, 219.0, 883.0, 226.0))
    for framing, face_list in ((yunet_rule, faces), (landmark_only, [tilted])):
        for face in face_list:
            for scale in (1.0, 0.78, 1.22):
                jobs.append({"op": "frame", "file": str(gray_path), "w": w, "h": h, "face": face.__dict__,
                             "framing": framing.to_dict(), "scale": scale})
                expected.append(crops.frame_face(gray, face, framing, "yunet", scale))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    code = """
import { readFileSync } from 'node:fs';
import { frameFace, resizeArea } from './faces.mjs';
const out = [];
for (const j of JSON.parse(readFileSync(process.argv[1], 'utf8'))) {
  const data = new Uint8Array(readFileSync(j.file));
  if (j.op === 'area') out.push(Array.from(resizeArea({ data, width: j.w, height: j.h, channels: j.c }, ...j.size)));
  else out.push(Array.from(frameFace(data, j.w, j.h, j.face, j.framing, 'yunet', j.scale).data));
}
console.log(JSON.stringify(out));
"""
    got = json.loads(node_module(node, code, tmp_path / "jobs.json"))
    for job, mine, ref in zip(jobs, got, expected):
        mine = np.array(mine, np.uint8).reshape(ref.shape)
        worst = int(np.abs(mine.astype(int) - ref).max())
        # the landmark warp's similarity is a closed form here and an SVD in Python: last-bit differences
        allowed = 1 if job["op"] == "frame" and "detector_boxes" not in job["framing"] else 0
        assert worst <= allowed, (job["op"], job.get("face"), job.get("scale"), worst)


# ---- the page ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_camera(videos, tmp_path_factory) -> tuple[Path, list[int]]:
    """CAMERA_FRAMES frames of a shared video as a .y4m file (I420), which Chromium's fake camera plays
    in a loop; and its [width, height]."""
    cap = cv2.VideoCapture(str(videos / VIDEO))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(CAMERA_FRAMES):
            ok, frame = cap.read()
            assert ok, f"{VIDEO}: fewer than {CAMERA_FRAMES} frames"
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    cap.release()
    return path, [width, height]


def test_page_finds_and_labels_fer_batchs_faces_and_the_camera(node, examples_server, bundled_embed, photos,
                                                                fer_batch_rows, fake_camera):
    """One browser: every shared photo through the page (fer-batch's faces, emotions and probabilities),
    then the camera mode on the fake camera (faces labelled, frames/s shown), served cross-origin
    isolated so that onnxruntime-web runs WebAssembly threads."""
    if not CHROMIUM.is_file():
        unavailable(f"needs Chromium at {CHROMIUM} for the browser test: apt-get install chromium (or set $CHROMIUM)")
    files = sorted({r["source"] for r in fer_batch_rows})
    y4m, video_size = fake_camera
    proc = subprocess.run([node, "web/headless.mjs", "--url", examples_server, "--chromium", str(CHROMIUM),
                           "--model", str(bundled_embed), "--camera", str(y4m), "--seconds", str(CAMERA_SECONDS),
                           *files], cwd=EXAMPLES, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backend"]["isolated"] and out["backend"]["name"] == "wasm", out["backend"]
    assert out["backend"]["threads"] >= min(2, len(os.sched_getaffinity(0)))
    got = [{"source": r["file"], "face": i, **f} for r in out["results"] for i, f in enumerate(r["faces"])]
    assert compare(fer_batch_rows, got, out["labels"]) == []
    camera = out["camera"]
    assert camera["video_size"] == video_size
    assert camera["frames"] >= 2 and camera["page_fps"] > 0 and "frames/s" in camera["page_text"]
    (face,) = camera["last_faces"]
    assert face["emotion"] in out["labels"] and abs(sum(face["probs"]) - 1) < 1e-3 and face["w"] >= 40


def test_page_on_webgpu_says_which_backend_ran_each_model(node, examples_server, bundled_embed, fer2013):
    """With a WebGPU adapter (Chromium's SwiftShader) the page runs YuNet on WebGPU; onnxruntime-web's
    WebGPU has no antialiased Resize, so the classifier falls back to WebAssembly, the page says so,
    and its answer is still Python's."""
    if not CHROMIUM.is_file():
        unavailable(f"needs Chromium at {CHROMIUM} for the browser test: apt-get install chromium (or set $CHROMIUM)")
    crop = sorted((fer2013 / "val" / "surprise").glob("*.jpg"))[0]
    proc = subprocess.run([node, "web/headless.mjs", "--url", examples_server, "--chromium", str(CHROMIUM), "--webgpu",
                           "--whole", "--model", str(bundled_embed), str(crop)], cwd=EXAMPLES, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    backend = out["backend"]
    if backend["name"] != "webgpu":
        pytest.skip(f"this Chromium offers no WebGPU adapter with --webgpu: {backend['note']}")
    assert (backend["yunet"], backend["classifier"]) == ("webgpu", "wasm"), backend
    assert "WebGPU cannot run" in backend["note"] and "antialias" in backend["note"]
    expected = EmotionClassifier(bundled_embed, provider="cpu").predict([cv2.imread(str(crop), cv2.IMREAD_GRAYSCALE)])[0]
    (result,) = out["results"]
    assert np.abs(np.array([result["probs"][label] for label in out["labels"]]) - expected).max() <= PROB_ATOL
