"""--tta hflip-uncertain: the graph mirrors exactly the faces whose top probability is below the
threshold, from a checkpoint and added to an existing ONNX file (fp32 or the bundled int8), and every
misuse is refused with one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fer_export.cli import EXIT_USAGE
from fer_export.cli.export import main
from fer_export.export import open_artifact
from fer_export.export.flip import FIRST_PASS, add_uncertain_flip, mix
from fer_export.spec import META_SOURCE_PARITY, UNCERTAIN
from fer_export.spec import META_FLIP_BELOW, META_PARITY, META_TTA


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def crops(n=24, seed=0):
    """uint8 crops (N, 48, 48) with varied content, so the tiny model's confidence varies between rows."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1), dtype=np.uint8)
    return np.clip(base + rng.normal(0, 40 + 20 * np.arange(n)[:, None, None] / n, (n, 48, 48)), 0, 255).astype(np.uint8)


def logits_of(path, batch):
    from fer_export.predictors import load_predictor

    return load_predictor(path).logits(batch)


def top_probability(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).max(axis=1)


def test_from_a_checkpoint_only_the_unsure_rows_are_mirrored(tiny_ckpt, tmp_path):
    batch = crops()
    plain, mirrored = logits_of(tiny_ckpt, batch), logits_of(tiny_ckpt, np.ascontiguousarray(batch[:, :, ::-1]))
    top = top_probability(plain)
    flip_below = float(np.median(top))  # half the rows each way
    out = tmp_path / "flip.onnx"
    result = cli("onnx", tiny_ckpt, "-o", out, "--tta", UNCERTAIN, "--flip-below", flip_below)
    assert result.exit_code == 0, result.output
    meta = open_artifact(out).metadata
    assert meta[META_TTA] == UNCERTAIN and float(meta[META_FLIP_BELOW]) == flip_below
    got = logits_of(out, batch)
    unsure = top < flip_below
    assert 0 < unsure.sum() < len(batch)
    np.testing.assert_allclose(got[unsure], (plain[unsure] + mirrored[unsure]) / 2, atol=1e-4)
    np.testing.assert_allclose(got[~unsure], plain[~unsure], atol=1e-4)
    assert cli("verify", out, "--against", tiny_ckpt).exit_code == 0


@pytest.mark.parametrize("flip_below, expect", [(1e-6, "none"), (1.0, "all")])
def test_added_to_an_onnx_file(exported, tmp_path, flip_below, expect):
    """Below a tiny threshold nothing is mirrored (the file's answers are the source's); at 1 every
    face is (the answers are --tta hflip's); a batch of none works."""
    source = exported["onnx"]
    out = tmp_path / "f.onnx"
    result = cli("onnx", source, "--tta", UNCERTAIN, "--flip-below", flip_below, "-o", out)
    assert result.exit_code == 0, result.output
    batch = crops(seed=3)
    plain = logits_of(source, batch)
    want = plain if expect == "none" else (plain + logits_of(source, np.ascontiguousarray(batch[:, :, ::-1]))) / 2
    np.testing.assert_allclose(logits_of(out, batch), want, atol=1e-5)
    assert logits_of(out, batch[:0]).shape == (0, 7)
    meta = open_artifact(out).metadata
    assert json.loads(meta[META_PARITY])["passed"] and json.loads(meta[META_SOURCE_PARITY])["passed"]


def test_default_name_and_threshold(exported):
    source = exported["onnx"]
    target = source.with_name(source.stem + ".flip.onnx")
    result = cli("onnx", source, "--tta", UNCERTAIN)
    try:
        assert result.exit_code == 0, result.output
        assert float(open_artifact(target).metadata[META_FLIP_BELOW]) == 0.6
        # a flip file gets no second flip, and no int8 copy
        again = cli("onnx", target, "--tta", UNCERTAIN, "-o", target.with_name("twice.onnx"))
        assert again.exit_code == EXIT_USAGE and "already has test-time augmentation" in again.output
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("args, says", [
    (["--flip-below", "0.5"], "--flip-below needs --tta hflip-uncertain"),
    (["--tta", UNCERTAIN, "--flip-below", "0"], "must be in (0, 1]"),
    (["--tta", UNCERTAIN, "--flip-below", "1.5"], "must be in (0, 1]"),
    (["--tta", UNCERTAIN, "--int8", "--calib", "."], "export with --int8 first"),
])
def test_misuse_is_one_line(tiny_ckpt, args, says):
    result = cli("onnx", tiny_ckpt, *args)
    assert result.exit_code == EXIT_USAGE and says in result.output, result.output
    assert "Traceback" not in result.output


def test_torchscript_has_no_uncertain_flip(tiny_ckpt):
    result = cli("torchscript", tiny_ckpt, "--tta", UNCERTAIN)
    assert result.exit_code == EXIT_USAGE and "hflip-uncertain" in result.output


def test_onnx_options_that_need_a_checkpoint_are_refused_with_the_flip(exported, tmp_path):
    result = cli("onnx", exported["onnx"], "--tta", UNCERTAIN, "--batch", "4", "-o", tmp_path / "x.onnx")
    assert result.exit_code == EXIT_USAGE and "separate steps" in result.output


def test_int8_is_not_made_from_a_flip_file(tiny_ckpt, tmp_path):
    from fer_export.errors import ExportError
    from fer_export.export import export_int8

    out = tmp_path / "f.onnx"
    assert cli("onnx", tiny_ckpt, "-o", out, "--tta", UNCERTAIN).exit_code == 0
    with pytest.raises(ExportError, match="make the int8 copy of the plain export"):
        export_int8(None, out, tmp_path)


def test_a_graph_without_softmax_probs_is_refused(exported):
    import onnx

    from fer_export.errors import ExportError

    proto = onnx.load(str(exported["onnx"]))
    del proto.graph.output[1]
    with pytest.raises(ExportError, match="outputs logits, probs"):
        add_uncertain_flip(proto, 0.5)


@pytest.mark.data
def test_the_bundled_fast_model_mirrors_exactly_its_unsure_faces(fer2013, tmp_path):
    """The shipped file against its own first pass (cut out of the graph): the rule, on real faces."""
    import onnx.utils

    from fer_export import EmotionClassifier
    from fer_export.folders import labelled_images
    from fer_export.preprocess import read_gray
    from fer_export.runtime import BUNDLED_MODELS
    from fer_export.spec import FER2013_LABELS

    path = BUNDLED_MODELS["fast"]["cpu"]
    clf = EmotionClassifier(path, provider="cpu")
    assert clf.metadata[META_TTA] == UNCERTAIN and float(clf.metadata[META_FLIP_BELOW]) == 0.6
    judged = json.loads(clf.metadata[META_SOURCE_PARITY])["judged"][0]  # the int8 gate of the plain file
    assert judged["passed"] and judged["eval_images"] == 3589
    first = tmp_path / "first.onnx"
    onnx.utils.extract_model(str(path), str(first), ["input"], [FIRST_PASS])
    items = labelled_images(fer2013 / "val", FER2013_LABELS, limit_per_class=10, seed=2)
    x = clf.prepare([read_gray(p) for p, _ in items])
    import onnxruntime as ort

    plain = ort.InferenceSession(str(first)).run(None, {"input": x})[0]
    mirrored = ort.InferenceSession(str(first)).run(None, {"input": np.ascontiguousarray(x[..., ::-1])})[0]
    unsure = top_probability(plain) < 0.6
    assert 0 < unsure.sum() < len(x)
    np.testing.assert_allclose(clf.session.run(["logits"], {"input": x})[0],
                               mix(plain, lambda rows: mirrored[rows], 0.6), atol=1e-5)
