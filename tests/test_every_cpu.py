"""Right on every CPU: int8 weights that cannot saturate, the literal run as a second reference, and
the self-check a model runs where it is opened."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer_export import probe
from fer_export.cpu import cpu_info
from fer_export.errors import SelfCheckError
from fer_export.export.quantize import (MIN_LITERAL_AGREEMENT, agreement_with_literal, requantize_weights,
                                        saturation_problems)
from fer_export.folders import labelled_images
from fer_export.preprocess import read_gray
from fer_export.runtime import ACCURATE_FP32, BUNDLED_MODELS, EmotionClassifier, SelfCheckWarning
from fer_export.spec import FER2013_LABELS, META_PROBE

BUNDLED_INT8 = {"accurate": BUNDLED_MODELS["accurate"]["cpu"], "fast": BUNDLED_MODELS["fast"]["cpu"]}
ZEN3_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni"


def scaled_copy(src: Path, dst: Path, factor: float = 1.5) -> Path:
    """``src`` with the scale of its first quantised weight (or its first float weight) multiplied by
    ``factor``: the same file, altered by hand."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_model(str(src))
    values = {i.name: i for i in proto.graph.initializer}
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and
          values.get(n.input[0]) is not None and values[n.input[0]].data_type == onnx.TensorProto.INT8]
    name = dq[0].input[1] if dq else next(i.name for i in proto.graph.initializer if len(i.dims) == 4)
    values[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(values[name]) * np.float32(factor), name))
    onnx.save_model(proto, str(dst))
    return dst


def full_range_int8(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """``fp32`` quantised as fer-export did before 7-bit weights: full-range int8 weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"])
    return out


@pytest.fixture(scope="module")
def faces_folder(tmp_path_factory):
    """The 16 probe faces as image files: enough for int8 calibration (MIN_CALIB_IMAGES) on any machine."""
    import cv2

    folder = tmp_path_factory.mktemp("faces")
    for i, face in enumerate(probe.probe_faces()):
        cv2.imwrite(str(folder / f"face{i:02d}.png"), face)
    return folder


@pytest.mark.parametrize("name", sorted(BUNDLED_INT8))
def test_bundled_int8_weights_cannot_saturate(name):
    assert saturation_problems(BUNDLED_INT8[name]) == []


def test_near_ties_count_as_agreeing_and_confident_faces_do_not():
    literal = np.array([[0.50, 0.48, 0.02], [0.90, 0.05, 0.05], [0.40, 0.30, 0.30]], np.float32)
    fused = np.array([[0.48, 0.50, 0.02], [0.05, 0.90, 0.05], [0.30, 0.40, 0.30]], np.float32)
    same, tie = agreement_with_literal(fused, literal)
    assert same.tolist() == [False, False, False] and tie.tolist() == [True, False, False]


def test_full_range_weights_break_the_bound_and_requantising_fixes_them(exported, tmp_path):
    import onnx

    clf = EmotionClassifier(exported["onnx"], "cpu")
    old = full_range_int8(exported["onnx"], tmp_path / "old.int8.onnx", clf.prepare(list(probe.probe_faces())))
    problems = saturation_problems(old)
    assert problems and all(int(p.rsplit(": ", 1)[1]) > 64 for p in problems)
    proto = onnx.load_model(str(old))
    assert requantize_weights(proto) == len(problems)
    onnx.save_model(proto, str(tmp_path / "new.onnx"))
    assert saturation_problems(tmp_path / "new.onnx") == []
    faces = list(probe.probe_faces())
    before = EmotionClassifier(old, "cpu", literal=True).predict(faces)
    after = EmotionClassifier(tmp_path / "new.onnx", "cpu", literal=True).predict(faces)
    assert np.abs(before - after).max() < 0.05  # the same model, its weights rounded to 7 bits


def test_fer_export_int8_writes_7bit_weights_checked_against_the_literal_run(exported, faces_folder, tmp_path):
    from fer_export.cli.export import main

    fp32 = tmp_path / "m.onnx"
    shutil.copy(exported["onnx"], fp32)
    labelled = tmp_path / "labelled" / "happy"
    shutil.copytree(faces_folder, labelled)
    r = CliRunner().invoke(main, ["onnx", str(fp32), "--int8", "--calib", str(faces_folder), "--eval-data",
                                  str(labelled.parent), "--accept-drop"])
    assert r.exit_code == 0, r.output
    assert "against its literal run" in r.output and "ok" in r.output
    assert saturation_problems(tmp_path / "m.int8.onnx") == []
    assert EmotionClassifier(tmp_path / "m.int8.onnx", "cpu").check.passed


def test_fer_export_requantize_rewrites_an_old_int8_file(exported, faces_folder, tmp_path):
    from fer_export.cli.export import main
    from fer_export.export import stamp_probe

    clf = EmotionClassifier(exported["onnx"], "cpu")
    raw = full_range_int8(exported["onnx"], tmp_path / "raw.int8.onnx", clf.prepare(list(probe.probe_faces())))
    from fer_export.export.onnx import stamp_onnx

    stamp_onnx(raw, {k: v for k, v in clf.metadata.items() if k != META_PROBE} | {"fer_export.precision": "int8"})
    old = stamp_probe(raw, tmp_path / "old.int8.onnx").path
    labelled = tmp_path / "labelled" / "happy"
    shutil.copytree(faces_folder, labelled)
    r = CliRunner().invoke(main, ["requantize", str(old), "--eval-data", str(labelled.parent), "--accept-drop"])
    assert r.exit_code == 0, r.output
    new = tmp_path / "old.int8.7bit.onnx"
    assert saturation_problems(old) and saturation_problems(new) == []
    assert EmotionClassifier(new, "cpu").check.passed
    r = CliRunner().invoke(main, ["verify", str(new)])
    assert r.exit_code == 0 and "cannot saturate" in r.output, r.output


@pytest.mark.parametrize("name", sorted(BUNDLED_INT8))
def test_bundled_int8_agree_with_their_literal_run_on_the_probe_faces(name):
    faces = list(probe.probe_faces())
    fused = EmotionClassifier(BUNDLED_INT8[name], "cpu", self_check=False).predict(faces)
    literal = EmotionClassifier(BUNDLED_INT8[name], "cpu", self_check=False, literal=True).predict(faces)
    same, tie = agreement_with_literal(fused, literal)
    assert (same | tie).all()
    assert np.abs(fused - literal).max() < probe.TOLERANCE["int8"]


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(BUNDLED_INT8))
def test_bundled_int8_agree_with_their_literal_run_on_publictest(fer2013, name):
    """On whatever CPU runs the tests: this CPU's int8 kernels against the file as ONNX defines it."""
    items = labelled_images(fer2013 / "val", FER2013_LABELS, limit_per_class=40, seed=2)
    faces = [read_gray(p) for p, _ in items]
    fused = EmotionClassifier(BUNDLED_INT8[name], "cpu", self_check=False).predict(faces)
    literal = EmotionClassifier(BUNDLED_INT8[name], "cpu", self_check=False, literal=True).predict(faces)
    same, tie = agreement_with_literal(fused, literal)
    agreement = float((same | tie).mean())
    assert agreement >= MIN_LITERAL_AGREEMENT, f"{agreement:.2%} on {len(faces)} faces on {cpu_info()}"
    assert np.abs(fused - literal)[~tie].max() < probe.TOLERANCE["int8"]


@pytest.mark.parametrize("path", [*BUNDLED_INT8.values(), ACCURATE_FP32], ids=lambda p: p.name)
def test_bundled_files_carry_a_probe_and_pass_it_here(path):
    clf = EmotionClassifier(path, "cpu")
    assert META_PROBE in clf.metadata
    assert clf.check.passed and clf.check.faces >= 12, clf.check.line()
    assert clf.check.max_diff <= clf.check.tolerance


def test_a_file_whose_weight_scale_was_altered_is_refused_at_open(tmp_path):
    bad = scaled_copy(BUNDLED_INT8["fast"], tmp_path / "altered.onnx")
    with pytest.raises(SelfCheckError, match=r"FAILED: altered\.onnx.* up to .*--no-self-check"):
        EmotionClassifier(bad, "cpu")
    clf = EmotionClassifier(bad, "cpu", self_check=False)  # the explicit way to run it anyway
    assert clf.check.status == probe.UNCHECKED and clf.predict(list(probe.probe_faces())).shape == (16, 7)


def test_an_altered_fp32_export_is_refused_too(exported, tmp_path):
    assert EmotionClassifier(exported["onnx"], "cpu").check.passed  # every export carries a probe
    with pytest.raises(SelfCheckError):
        EmotionClassifier(scaled_copy(exported["onnx"], tmp_path / "altered.onnx"), "cpu")


@pytest.fixture
def kernels_wrong_here(monkeypatch):
    """Force the mismatch a CPU without VNNI gives a full-range int8 file: the check fails for every
    session that runs fused int8 kernels, and passes for the fp32 file and for literal runs."""
    real = probe.self_check

    def check(clf):
        result = real(clf)
        if clf.literal or clf.metadata.get("fer_export.precision") != "int8":
            return result
        return probe.SelfCheck(result.path, probe.FAILED, "a CPU without VNNI", result.faces, 0.43,
                               result.tolerance, result.reference)

    monkeypatch.setattr(probe, "self_check", check)


@pytest.mark.usefixtures("kernels_wrong_here")
def test_a_bundled_name_falls_back_to_a_correct_path_with_one_warning():
    with pytest.warns(SelfCheckWarning) as warned:
        accurate = EmotionClassifier("accurate", "cpu")
    assert accurate.path == ACCURATE_FP32 and accurate.check.passed
    with pytest.warns(SelfCheckWarning) as warned_fast:
        fast = EmotionClassifier("fast", "cpu")
    assert fast.path == BUNDLED_INT8["fast"] and fast.literal and fast.check.passed
    for w in (*warned, *warned_fast):
        text = str(w.message)
        assert "\n" not in text and "a CPU without VNNI" in text and "0.4300" in text
    assert "fp32 file" in str(warned[0].message) and "graph optimisations off" in str(warned_fast[0].message)
    faces = list(probe.probe_faces())
    assert (fast.predict(faces).argmax(1) == fast.sibling(1).predict(faces).argmax(1)).all()


@pytest.mark.usefixtures("kernels_wrong_here")
def test_a_users_int8_file_is_refused_when_its_kernels_are_wrong_here():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SelfCheckError, match="a CPU without VNNI"):
            EmotionClassifier(Path(str(BUNDLED_INT8["fast"])), "cpu")  # a path, not the bundled name


@pytest.mark.data
def test_fer_batch_says_the_check_passed_and_refuses_an_altered_file(photos, tmp_path):
    from fer_export.cli.batch import main

    photo = str(photos / "fer_justin.jpg")
    r = CliRunner().invoke(main, [photo, "--out", str(tmp_path / "a.csv"), "--model", "fast", "--provider", "cpu"])
    assert r.exit_code == 0, r.output
    assert "self-check passed: fer2013_fast.int8.onnx" in r.stderr
    bad = scaled_copy(BUNDLED_INT8["fast"], tmp_path / "altered.onnx")
    r = CliRunner().invoke(main, [photo, "--out", str(tmp_path / "b.csv"), "--model", str(bad), "--provider", "cpu"])
    assert r.exit_code == 2 and "self-check FAILED" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.csv").exists()
    r = CliRunner().invoke(main, [photo, "--out", str(tmp_path / "c.csv"), "--model", str(bad), "--provider", "cpu",
                                  "--no-self-check"])
    assert r.exit_code == 0, r.output
    assert "not checked" in r.stderr


def test_a_file_without_a_probe_runs_and_says_it_was_not_checked(exported, tmp_path):
    import onnx

    proto = onnx.load_model(str(exported["onnx"]))
    kept = [p for p in proto.metadata_props if p.key != META_PROBE]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save_model(proto, str(tmp_path / "old.onnx"))
    clf = EmotionClassifier(tmp_path / "old.onnx", "cpu")
    assert clf.check.status == probe.UNCHECKED and "not checked" in clf.check.line()
    from fer_export.cli.export import main

    r = CliRunner().invoke(main, ["stamp", str(tmp_path / "old.onnx")])
    assert r.exit_code == 0 and "self-check passed" in r.output, r.output
    stamped = EmotionClassifier(tmp_path / "old.stamped.onnx", "cpu")
    assert stamped.check.passed and stamped.check.faces == 16
    r = CliRunner().invoke(main, ["stamp", str(tmp_path / "old.onnx"), "-o", str(tmp_path / "old.onnx")])
    assert r.exit_code == 2 and "old.onnx" in r.output  # never over its input


@pytest.mark.parametrize("text", ["", '{"faces": "!!", "side": 48}', '[' * 100_000 + ']' * 100_000,
                                  '{"faces": "", "side": 48, "probs": [], "reference": "x", "tolerance": 0.05}'])
def test_a_malformed_probe_is_a_one_line_error(exported, tmp_path, text):
    from fer_export.errors import ArtifactError
    from fer_export.export.onnx import stamp_onnx

    path = tmp_path / "m.onnx"
    shutil.copy(exported["onnx"], path)
    stamp_onnx(path, EmotionClassifier(path, "cpu").metadata | {META_PROBE: text})
    with pytest.raises(ArtifactError, match="probe") as info:
        EmotionClassifier(path, "cpu")
    assert "\n" not in str(info.value)


def test_fer_export_verify_checks_a_model_on_this_machine(tmp_path):
    from fer_export.cli.export import main

    r = CliRunner().invoke(main, ["verify", str(BUNDLED_INT8["accurate"])])
    assert r.exit_code == 0 and "self-check passed" in r.output and "cannot saturate" in r.output, r.output
    r = CliRunner().invoke(main, ["verify", str(scaled_copy(BUNDLED_INT8["accurate"], tmp_path / "x.onnx"))])
    assert r.exit_code == 1 and "self-check FAILED" in r.output, r.output


def test_the_cpu_line_names_the_int8_instruction_sets(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    f"model name\t: AMD EPYC 7B13\nflags\t\t: {ZEN3_FLAGS}\n\nprocessor\t: 1\n")
    zen3 = cpu_info.__wrapped__(info)
    assert zen3.features == ("AVX2",) and not zen3.vnni
    assert str(zen3) == "AMD EPYC 7B13 (AVX2, family/model 25/1)"
    info.write_text(f"model name\t: Intel Xeon\nflags\t\t: {ZEN3_FLAGS} avx512f avx512_vnni amx_int8\n")
    assert cpu_info.__wrapped__(info).features == ("AVX2", "AVX-512", "VNNI", "AMX")
