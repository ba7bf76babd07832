"""``fer-export fp16``: an fp32 ONNX file's float16 copy keeps float32 input and outputs and the source's
contract, passes the fp16 parity gate (and fails it when it should), runs in every consumer unchanged and
checks itself; the bundled accurate model's copy gives its answers on the bundled probe faces."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fer_export import EmotionClassifier
from fer_export.cli import EXIT_FAILED, EXIT_USAGE
from fer_export.cli.export import main
from fer_export.errors import ExportError, ParityError
from fer_export.export import open_artifact
from fer_export.export.fp16 import PREFIX, export_fp16, to_fp16
from fer_export.parity import FP16, FP16_PROB_ATOL, PREPROC_PROB_ATOL, Tolerance
from fer_export.probe import TOLERANCE, probe_faces
from fer_export.runtime import ACCURATE_FP32
from fer_export.spec import (META_PARITY, META_PRECISION, META_PROBE, META_SOURCE_PARITY, META_SOURCE_SHA256,
                             META_SPEC, META_TTA)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def crops(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return list(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8))


def agree_or_tie(ref: np.ndarray, got: np.ndarray, atol: float) -> bool:
    """Same top-1 on every row whose reference top-2 margin exceeds 2 * atol (the gate's rule)."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    return bool(np.all((ref.argmax(1) == got.argmax(1)) | (top2[:, 1] - top2[:, 0] <= 2 * atol)))


@pytest.fixture(scope="module")
def source(exported, tmp_path_factory):
    """The tiny checkpoint's fp32 ONNX export, copied to a folder of this module's own."""
    return Path(shutil.copy(exported["onnx"], tmp_path_factory.mktemp("fp16") / "tiny.onnx"))


@pytest.fixture(scope="module")
def half(source):
    result = cli("fp16", source)
    assert result.exit_code == 0, result.output
    out = Path(source).with_name("tiny.fp16.onnx")
    assert out.is_file() and "parity (fp16): passed" in result.output and "probe faces[16]" in result.output
    return out


def test_weights_are_fp16_and_input_and_outputs_stay_float32(source, half):
    proto = onnx.load_model(str(half))
    kinds = {t.data_type for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    assert kinds == {TensorProto.FLOAT16}  # every float weight feeds a float16 op
    assert [(v.name, v.type.tensor_type.elem_type) for v in (*proto.graph.input, *proto.graph.output)] == \
        [("input", TensorProto.FLOAT), ("logits", TensorProto.FLOAT), ("probs", TensorProto.FLOAT)]
    casts = [n for n in proto.graph.node if n.op_type == "Cast"]
    assert [(list(n.input), list(n.output)) for n in casts] == [(["input"], [PREFIX + "to16/input"]),
                                                                 ([PREFIX + "logits"], ["logits"])]
    softmax = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert [(list(n.input), list(n.output)) for n in softmax] == [(["logits"], ["probs"])]  # in float32
    assert half.stat().st_size < 0.55 * source.stat().st_size


def test_it_carries_the_sources_contract_its_gate_and_a_probe(source, half):
    src, got = open_artifact(source).metadata, open_artifact(half).metadata
    for key in (META_SPEC, META_TTA, META_SOURCE_SHA256):
        assert got[key] == src[key], key
    assert got[META_PRECISION] == "fp16" and src[META_PRECISION] == "fp32"
    assert got[META_SOURCE_PARITY] == src[META_PARITY]
    parity = json.loads(got[META_PARITY])
    assert parity["passed"] and parity["tolerance"] == "fp16"
    assert {c["inputs"] for c in parity["checks"]} >= {"random[1]", "random[8]", "synthetic[64]", "probe faces[16]"}
    probe = json.loads(got[META_PROBE])
    assert probe["reference"] == "fp16" and probe["tolerance"] == TOLERANCE["fp16"]


def test_classifier_runs_it_checked_and_it_agrees_with_fp32(source, half, tiny_ckpt):
    clf = EmotionClassifier(half, "cpu")
    assert clf.check.passed and clf.check.faces == 16
    faces = crops()
    ref, got = EmotionClassifier(source, "cpu").predict(faces), clf.predict(faces)
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= FP16_PROB_ATOL
    assert agree_or_tie(ref, got, FP16_PROB_ATOL)
    assert cli("verify", half).exit_code == 0
    result = cli("verify", half, "--against", tiny_ckpt)  # against PyTorch, with the fp16 tolerance
    assert result.exit_code == 0 and "parity (fp16): passed" in result.output, result.output


def test_embed_and_flip_take_the_fp16_file(half, tmp_path):
    embedded, flipped = tmp_path / "e.onnx", tmp_path / "f.onnx"
    for command, out in (("embed", embedded), ("flip", flipped)):
        result = cli(command, half, "-o", out)
        assert result.exit_code == 0, result.output
        assert open_artifact(out).metadata[META_PRECISION] == "fp16"
    faces = crops(8, seed=1)
    ref = EmotionClassifier(half, "cpu").predict(faces)
    assert np.abs(EmotionClassifier(embedded, "cpu").predict(faces) - ref).max() <= PREPROC_PROB_ATOL
    assert EmotionClassifier(flipped, "cpu").check.passed


def test_a_corrupted_fp16_weight_fails_the_gate(source, tmp_path, monkeypatch):
    import fer_export.export.fp16 as fp16

    def corrupted(proto):
        to_fp16(proto)
        gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
        bias = next(t for t in proto.graph.initializer if t.name == gemm.input[2])
        values = numpy_helper.to_array(bias).copy()
        values[0] += 5  # one class's bias: its probability jumps on every face
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        return proto

    monkeypatch.setattr(fp16, "to_fp16", corrupted)
    out = tmp_path / "bad.fp16.onnx"
    result = cli("fp16", source, "-o", out)
    assert result.exit_code == EXIT_FAILED and "FAILED" in result.output, result.output
    assert not out.exists() and (tmp_path / "bad.fp16.failed.onnx").is_file()


def test_a_tolerance_float16_cannot_meet_fails_the_gate(source, tmp_path, monkeypatch):
    import fer_export.parity as parity

    monkeypatch.setattr(parity, "FP16", Tolerance("fp16", {"probs": 1e-9}, min_top1=1.0))
    with pytest.raises(ParityError) as err:
        export_fp16(source, tmp_path / "tight.fp16.onnx")
    assert not err.value.report.passed and "max |diff|" in str(err.value)
    assert not (tmp_path / "tight.fp16.onnx").exists()


@pytest.mark.parametrize("what", ["fp16", "torchscript", "suffix"])
def test_what_it_cannot_convert_is_one_line(half, exported, tmp_path, what):
    args = {"fp16": [half, "-o", tmp_path / "again.onnx"], "torchscript": [exported["torchscript"]],
            "suffix": [half.with_name("tiny.onnx"), "-o", tmp_path / "out.pt"]}[what]
    result = cli("fp16", *args)
    assert result.exit_code == EXIT_USAGE and result.output.count("\n") == 1, result.output
    assert {"fp16": "must be an fp32 ONNX file", "torchscript": "must be an fp32 ONNX file",
            "suffix": "*.onnx"}[what] in result.output


def _run(proto, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x})))


def small_graph(w_scale=1.0):
    """x -> MatMul(W) = a (an output, read by float32 Exp and Pow); Add(Exp(a), c) = f; Pow(a, c) = p.
    ``c`` feeds a float16 op (Add) and a float32 one (Pow)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 4)) * 0.3 * w_scale).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Exp", ["a"], ["e"]),
             helper.make_node("Add", ["e", "c"], ["f"]), helper.make_node("Pow", ["a", "c"], ["p"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["n", 4]) for y in "afp"],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32([2.0]), "c")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_only_the_listed_ops_go_fp16_with_casts_between():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    ref = _run(small_graph(), x)
    proto = to_fp16(small_graph())
    onnx.checker.check_model(proto, full_check=True)
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    assert inits == {"w": TensorProto.FLOAT16, "c": TensorProto.FLOAT, PREFIX + "c": TensorProto.FLOAT16}
    ops = {n.output[0]: (n.op_type, list(n.input)) for n in proto.graph.node}
    assert ops["e"] == ("Exp", ["a"]) and ops["p"] == ("Pow", ["a", "c"])  # float32 ops read float32 tensors
    assert ops[PREFIX + "f"] == ("Add", [PREFIX + "to16/e", PREFIX + "c"])
    assert sum(n.op_type == "Cast" for n in proto.graph.node) == 4  # x in, a and f out, e into Add
    got = _run(proto, x)
    assert all(got[k].dtype == np.float32 for k in "afp")
    for k in "afp":
        np.testing.assert_allclose(got[k], ref[k], rtol=5e-3, atol=5e-3)


def test_a_weight_beyond_float16s_range_is_refused():
    with pytest.raises(ExportError, match="beyond float16's range"):
        to_fp16(small_graph(w_scale=1e6))


@pytest.fixture(scope="module")
def bundled_half(tmp_path_factory):
    return export_fp16(ACCURATE_FP32, tmp_path_factory.mktemp("bundled") / "accurate.fp16.onnx").path


def test_the_bundled_accurate_model_in_fp16_gives_its_answers_on_the_probe_faces(bundled_half):
    faces = list(probe_faces())
    ref = EmotionClassifier(ACCURATE_FP32, "cpu").predict(faces)
    clf = EmotionClassifier(bundled_half, "cpu")
    got = clf.predict(faces)
    assert clf.check.passed and np.abs(got - ref).max() <= FP16_PROB_ATOL
    assert (got.argmax(1) == ref.argmax(1)).all()
    assert bundled_half.stat().st_size < 0.51 * ACCURATE_FP32.stat().st_size
    assert json.loads(clf.metadata[META_PARITY])["tolerance"] == FP16.name
