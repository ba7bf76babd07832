"""Embedding elsewhere: the one-file ONNX artifact in Node.js and in a browser gives Python's probabilities.

The embeddable artifact is an ONNX file exported with ``--with-preprocessing`` (or made from an ONNX
file by ``fer-export embed``): raw uint8 gray crops in, labels, input format and face framing in its
metadata. ``examples/node/classify.mjs`` (onnxruntime-node) and the page ``examples/web/``
(onnxruntime-web in headless Chromium, driven by playwright-core, served by ``examples/serve.mjs``)
read that one file and must agree with :class:`fer_export.EmotionClassifier` on the same real face
crops. Faces found in photos: ``tests/test_embed_detect.py``.

Needs Node.js 20.9+ and ``npm ci --ignore-scripts`` in ``examples/``; the browser tests also need
Debian's ``chromium`` (``apt-get install chromium``; ``$CHROMIUM`` names another binary). Each test
says what is missing and skips; under ``CI=true`` (where ``.ci/run`` installs all of them) it fails
instead. Run: ``python -m pytest -q tests/test_embed.py``.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import fer_export
from fer_export import EmotionClassifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BUNDLED = Path(fer_export.__file__).parent / "models" / "fer2013_resnet18.onnx"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
#: The same graph on another onnxruntime build (native Node.js, WebAssembly in Chromium) and another
#: image decoder (libvips, Chromium's): measured max |d prob| 0 (Node.js) and 2.4e-7 (Chromium).
PROB_ATOL = 1e-4
#: The bundled model with its preprocessing composed in front, against the bundled model fed by the
#: Python (PIL) preprocessing: photo crops resized at other ratios may differ by one gray level on a
#: few pixels (the --with-preprocessing parity tolerance).
PREPROCESSING_ATOL = 0.02
CROPS_PER_CLASS = 4  # FER2013 PublicTest crops per class: 28 in all
NODE_VERSION = (20, 9)  # sharp 0.35 needs 20.9
TIMEOUT = 300


def unavailable(reason: str):
    """Skip with ``reason``; under CI=true fail, since .ci/run installs everything these tests need."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} — CI=true, and .ci/run installs it, so this is an error")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        unavailable("needs Node.js 20.9+ (`node` on PATH) to run examples/node")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    if tuple(int(v) for v in version.lstrip("v").split(".")[:2]) < NODE_VERSION:
        unavailable(f"needs Node.js 20.9+, found {version}")
    missing = [p for p in ("onnxruntime-node", "onnxruntime-web", "sharp", "playwright-core")
               if not (EXAMPLES / "node_modules" / p).is_dir()]
    if missing:
        unavailable(f"examples/node_modules lacks {missing}: run `npm ci --ignore-scripts` in {EXAMPLES}")
    return exe


@pytest.fixture(scope="session")
def examples_server(node):
    """``node examples/serve.mjs --port 0``, as a user serves the page (cross-origin isolated, with the
    YuNet file fer-export ships at /web/yunet.onnx); yields the page's URL."""
    proc = subprocess.Popen([node, "serve.mjs", "--port", "0"], cwd=EXAMPLES, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        pytest.fail(f"serve.mjs did not start: {url}{proc.stderr.read()}")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def browser(request, node):
    """``browser(*options, model=, files=) -> parsed JSON``: the page in headless Chromium (web/headless.mjs)."""
    if not CHROMIUM.is_file():
        unavailable(f"needs Chromium at {CHROMIUM} for the browser test: apt-get install chromium "
                    "(or set $CHROMIUM)")
    url = request.getfixturevalue("examples_server")
    # --whole: each file is one face, classified whole (the page's "Find faces" unticked)
    return functools.partial(run_example, node, "web/headless.mjs", "--url", url, "--chromium", str(CHROMIUM), "--whole")


@pytest.fixture(params=["node", "browser"])
def host(request, node):
    """``host(model=, files=) -> parsed JSON``: the Node.js program or the page in headless Chromium."""
    if request.param == "node":
        return functools.partial(run_example, node, "node/classify.mjs")
    return request.getfixturevalue("browser")


def run_example(node: str, script: str, *args, model: Path, files: list[Path]) -> dict:
    proc = subprocess.run([node, script, *args, "--model", str(model), *map(str, files)], cwd=EXAMPLES,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout[-2000:]}"
    return json.loads(proc.stdout)


def fer_export_cli(*args) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("fer-export")
    cmd = [str(exe)] if exe.is_file() else [shutil.which("fer-export") or "fer-export"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def embed_model(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint as the embeddable artifact: `fer-export onnx --with-preprocessing`."""
    out = tmp_path_factory.mktemp("embed") / "tiny.embed.onnx"
    result = fer_export_cli("onnx", tiny_ckpt, "--with-preprocessing", "-o", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="session")
def fer_crops(fer2013) -> list[Path]:
    """CROPS_PER_CLASS real PublicTest crops of every class, spread over each class's sorted files."""
    picked = []
    for folder in sorted(p for p in (fer2013 / "val").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        picked += [files[i * len(files) // CROPS_PER_CLASS] for i in range(CROPS_PER_CLASS)]
    return picked


@pytest.fixture(scope="session")
def photo_crops(photos, tmp_path_factory) -> list[Path]:
    """Larger gray face crops from a photograph, saved losslessly: the graph resizes them itself."""
    out = tmp_path_factory.mktemp("photo_crops")
    photo = cv2.imread(str(photos / "fr_obama-480p.jpg"), cv2.IMREAD_GRAYSCALE)
    paths = []
    for y, x, h, w in [(40, 330, 180, 180), (60, 300, 240, 247)]:
        paths.append(out / f"obama_{h}x{w}.png")
        cv2.imwrite(str(paths[-1]), photo[y:y + h, x:x + w])
    return paths


def python_probs(model: Path, files: list[Path]) -> np.ndarray:
    """The reference: the Python runtime on the same files, read as gray the way fer-batch reads them."""
    faces = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    return EmotionClassifier(model, provider="cpu").predict(faces)


def host_probs(output: dict, files: list[Path]) -> np.ndarray:
    """The host's probabilities in file order and label order; every file must have been classified."""
    by_file = {r["file"]: r for r in output["results"]}
    errors = [r for r in output["results"] if "error" in r]
    assert not errors, errors
    return np.array([[by_file[str(f)]["probs"][label] for label in output["labels"]] for f in files])


def agreement(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """``(max |d prob|, top-1 agreement)``."""
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max()), float(np.mean(got.argmax(1) == expected.argmax(1)))


# ---- the artifact ----------------------------------------------------------------------------------

def test_embeddable_artifact_is_one_file_that_carries_its_contract(node, embed_model):
    """Loaded from its bytes alone (no external data, no sidecar), raw uint8 crops of any size in, and
    the JavaScript contract reader reads the same metadata as onnxruntime does."""
    import onnxruntime as ort

    sess = ort.InferenceSession(embed_model.read_bytes(), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.type, inp.shape[1]) == ("tensor(uint8)", 1)
    assert all(isinstance(d, str) for d in (inp.shape[0], *inp.shape[2:])), inp.shape  # batch, height, width
    assert "probs" in [o.name for o in sess.get_outputs()]
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    assert meta["fer_export.input"] == "uint8"
    assert json.loads(meta["fer_export.spec"])["labels"] == list(fer_export.FER2013_LABELS)

    code = ("import {readFile} from 'node:fs/promises'; import {readMetadata} from './contract.mjs';"
            "console.log(JSON.stringify(readMetadata(await readFile(process.argv[1]))));")
    proc = subprocess.run([node, "--input-type=module", "-e", code, str(embed_model)], cwd=EXAMPLES,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == meta


# ---- the hosts agree with Python -------------------------------------------------------------------

def test_host_matches_python_on_real_face_crops(host, embed_model, fer_crops, photo_crops):
    """At least 20 real PublicTest crops, 3+ per class, plus larger photo crops: same probabilities."""
    classes = {f.parent.name for f in fer_crops}
    assert len(fer_crops) >= 20 and len(classes) == 7 and len(fer_crops) >= 3 * len(classes)
    files = fer_crops + photo_crops
    output = host(model=embed_model, files=files)
    assert output["labels"] == list(EmotionClassifier(embed_model, provider="cpu").labels)
    diff, top1 = agreement(host_probs(output, files), python_probs(embed_model, files))
    assert diff <= PROB_ATOL and top1 == 1.0, f"max |d prob| {diff:.3g} (tolerance {PROB_ATOL}), top-1 {top1:.1%}"


def test_node_refuses_a_model_that_needs_host_preprocessing(node):
    """The bundled model takes normalised floats: the example says how to get the embeddable graph."""
    if not BUNDLED.is_file():
        pytest.skip(f"no bundled model at {BUNDLED}")
    proc = subprocess.run([node, "node/classify.mjs", "--model", str(BUNDLED), "face.jpg"], cwd=EXAMPLES,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'normalized' input" in proc.stderr and "--with-preprocessing" in proc.stderr


def test_node_takes_folders_and_records_a_bad_file_and_goes_on(node, embed_model, fer_crops, tmp_path):
    """A folder stands for the images under it; an unreadable one gets an error entry, exit 1."""
    (tmp_path / "sub").mkdir()
    good = [tmp_path / "a.jpg", tmp_path / "sub" / "c.jpg"]
    for path, crop in zip(good, fer_crops):
        path.write_bytes(crop.read_bytes())
    (tmp_path / "b.jpg").write_bytes(b"not a picture")
    (tmp_path / "notes.txt").write_text("not an image name, skipped")
    proc = subprocess.run([node, "node/classify.mjs", "--model", str(embed_model), str(tmp_path)], cwd=EXAMPLES,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["file"] for r in results] == [str(good[0]), str(tmp_path / "b.jpg"), str(good[1])]
    assert results[1]["error"] and all(abs(sum(results[i]["probs"].values()) - 1) < 1e-5 for i in (0, 2))


def test_page_classifies_a_square_dragged_on_a_colour_photo(browser, embed_model, photos):
    """A user drags a square around a face. The page's gray (BT.601, as OpenCV's) of Chromium's
    decoded colours gives what Python gives for the same BGR crop."""
    photo = photos / "fr_obama-480p.jpg"
    output = browser("--select", "335,45,170", model=embed_model, files=[photo])
    (result,) = output["results"]
    x, y, side = result["selection"]
    assert (x, y, side) == (335, 45, 170)
    crop = cv2.imread(str(photo), cv2.IMREAD_COLOR)[y:y + side, x:x + side]
    expected = EmotionClassifier(embed_model, provider="cpu").predict([crop])
    diff, top1 = agreement(host_probs(output, [photo]), expected)
    assert diff <= PROB_ATOL and top1 == 1.0, f"max |d prob| {diff:.3g} (tolerance {PROB_ATOL})"


# ---- the bundled model, made embeddable ------------------------------------------------------------

@pytest.fixture(scope="session")
def bundled_embed(tmp_path_factory) -> Path:
    """The bundled (normalised-input) model with its preprocessing composed in front: `fer-export embed`."""
    if not BUNDLED.is_file():
        pytest.skip(f"no bundled model at {BUNDLED}")
    out = tmp_path_factory.mktemp("bundled") / "fer2013_resnet18.embed.onnx"
    result = fer_export_cli("embed", BUNDLED, "-o", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_bundled_model_embeds_without_changing_its_answers(bundled_embed, fer_crops, photo_crops):
    files = fer_crops + photo_crops
    diff, top1 = agreement(python_probs(bundled_embed, files), python_probs(BUNDLED, files))
    assert diff <= PREPROCESSING_ATOL and top1 == 1.0, f"max |d prob| {diff:.3g}, top-1 {top1:.1%}"
    # FER crops are 48 px and the model takes 96: the graph's resize gives PIL's pixels exactly there.
    diff, _ = agreement(python_probs(bundled_embed, fer_crops), python_probs(BUNDLED, fer_crops))
    assert diff <= PROB_ATOL, f"FER crops: max |d prob| {diff:.3g}"


def test_host_runs_the_bundled_model(host, bundled_embed, fer_crops):
    output = host(model=bundled_embed, files=fer_crops)
    diff, top1 = agreement(host_probs(output, fer_crops), python_probs(bundled_embed, fer_crops))
    assert diff <= PROB_ATOL and top1 == 1.0, f"max |d prob| {diff:.3g} (tolerance {PROB_ATOL}), top-1 {top1:.1%}"
