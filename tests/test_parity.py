"""The parity report: every output checked against named tolerances, every failure collected."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fer_export.parity import FP32, PARITY_BATCH, Tolerance, compare, input_sets, synthetic_faces
from fer_export.spec import ModelSpec

SPEC = ModelSpec(input_size=(48, 48))


def runner(scale=1.0, shift=0.0):
    def run(x):
        logits = x.reshape(len(x), -1)[:, :7] * scale + shift
        e = np.exp(logits - logits.max(1, keepdims=True))
        return {"logits": logits, "probs": e / e.sum(1, keepdims=True)}

    return run


def sets():
    return input_sets(SPEC, "normalized")


def test_identical_runners_pass_every_output():
    report = compare(runner(), runner(), sets(), FP32)
    assert report.passed and not report.failures
    assert {(c.inputs, c.output) for c in report.checks} >= {("random[1]", "logits"), (f"random[{PARITY_BATCH}]", "probs")}
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_every_failure_is_collected_with_its_numbers():
    report = compare(runner(), runner(shift=np.arange(7) * 1e-2), sets(), FP32)
    assert not report.passed
    assert len(report.failures) == len(report.checks) == 2 * len(sets())
    assert "max |diff| 0.06 > tolerance 0.0001" in report.failures[0]
    assert "FAILED" in report.summary()


def test_top1_flip_fails_but_near_ties_are_excused():
    tol = Tolerance("t", {"logits": 0.1}, min_top1=1.0)
    ref = lambda x: {"logits": np.array([[1.0, 0.0], [1.0, 0.95]])}  # noqa: E731
    flipped = lambda x: {"logits": np.array([[1.0, 0.0], [0.95, 1.0]])}  # noqa: E731
    swapped = lambda x: {"logits": np.array([[0.0, 1.0], [1.0, 0.95]])}  # noqa: E731
    assert compare(ref, flipped, {"x": None}, tol).passed  # the second row was a tie within tolerance
    report = compare(ref, swapped, {"x": None}, tol)
    assert not report.passed and report.checks[0].top1_agreement == 0.5


def test_shape_mismatch_and_missing_outputs_fail():
    short = lambda x: {"logits": runner()(x)["logits"][:, :6]}  # noqa: E731
    assert not compare(runner(), short, sets(), FP32).passed
    report = compare(runner(), lambda x: {"scores": x}, {"x": np.zeros((1, 7))}, FP32)
    assert not report.passed and "include none of" in report.failures[0]


def test_input_sets_for_fixed_batch_and_uint8_graphs():
    fixed = input_sets(SPEC, "normalized", batch=4)
    assert {k: v.shape[0] for k, v in fixed.items()} == {"random[4]": 4, "synthetic[4]": 4}
    raw = input_sets(SPEC, "uint8")
    assert all(v.dtype == np.uint8 and v.shape[1] == 1 for v in raw.values())
    assert {v.shape[2:] for v in raw.values()} == {(96, 96), (27, 25), (103, 99)}


def test_input_sets_sample_real_faces(fer2013):
    got = input_sets(SPEC, "normalized", data=fer2013 / "val")
    assert got["faces[64]"].shape == (64, 1, 48, 48)


def test_synthetic_faces_are_deterministic_structured_uint8():
    a, b = synthetic_faces(4, seed=3), synthetic_faces(4, seed=3)
    assert all(x.dtype == np.uint8 and x.shape == (96, 96) for x in a)
    assert all((x == y).all() for x, y in zip(a, b))
    assert all(x.std() > 10 for x in a)  # not flat


def test_bad_data_folder_is_an_input_error(tmp_path):
    from fer_export.errors import InputError

    with pytest.raises(InputError, match="no images"):
        input_sets(SPEC, "normalized", data=tmp_path)
