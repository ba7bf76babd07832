"""benchmarks/pictures.py on a tiny slice: the pictures it builds and the table's numbers agree.

No assertion looks at how accurate the tiny model is: only that the counts are consistent.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import pictures  # noqa: E402


def test_pictures_are_seeded_and_hold_the_face(tmp_path, fer2013):
    faces = pictures.sample_faces(fer2013 / "val", 1, np.random.default_rng(3))
    assert len(faces) == 7 and faces == pictures.sample_faces(fer2013 / "val", 1, np.random.default_rng(3))
    a = pictures.build_pictures(faces, None, tmp_path / "a", np.random.default_rng(3))
    b = pictures.build_pictures(faces, None, tmp_path / "b", np.random.default_rng(3))
    assert a == b and len(a) == 7 and {p.background for p in a} == {"noise"}
    for p in a:
        assert (tmp_path / "a" / p.name).read_bytes() == (tmp_path / "b" / p.name).read_bytes()
        x, y, w, h = p.box
        assert w == h and pictures.FACE_SIDES[0] <= w <= pictures.FACE_SIDES[1]
        assert 0 <= x and x + w <= pictures.PICTURE[1] and 0 <= y and y + h <= pictures.PICTURE[0]


def test_table_numbers_are_consistent(tmp_path, fer2013, photos, exported):
    out = tmp_path / "bench"
    code = pictures.main(["--data", str(fer2013 / "val"), "--per-class", "2", "--model", str(exported["onnx"]),
                          "--photos", str(photos), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "pictures.json").read_text())
    assert result["faces"] == 14 and result["pictures"] == 28  # two backgrounds
    rows = result["rows"]
    assert {(r["detector"], r["background"]) for r in rows} == {
        (d, b) for d in ("yunet", "haar") for b in ("noise", "photo", "all")}
    for r in rows:
        n, found = r["pictures"], r["found"]
        assert n == (28 if r["background"] == "all" else 14)
        assert 0 <= found <= n and r["found_pct"] == pytest.approx(100 * found / n, abs=0.05)
        correct = round(r["end_to_end"] * n / 100)
        assert correct <= found
        if found:
            assert r["acc_found"] == pytest.approx(100 * correct / found, abs=0.05)
            assert 0 <= r["crop_acc_found"] <= 100 and 0 <= r["placed_acc_found"] <= 100
        assert 0 <= r["crop_acc_all"] <= 100
    for d in ("yunet", "haar"):
        part = {r["background"]: r for r in rows if r["detector"] == d}
        assert part["all"]["found"] == part["noise"]["found"] + part["photo"]["found"]
    for folder in ("pictures", "placed"):
        assert len(list((out / folder).glob("*.png"))) == 28
    assert len({r["crop_acc_all"] for r in rows if r["background"] == "all"}) == 1  # the same faces for every detector


def test_framed_mode_only_for_a_model_with_a_framing(tmp_path, exported):
    from fer_export.spec import Framing
    from training.face_template import stamp

    framing = Framing((0.33, 0.37, 0.67, 0.37, 0.5, 0.59, 0.36, 0.75, 0.64, 0.75), (0.0, 0.0, 1.03))
    assert pictures.crop_modes(exported["onnx"]) == ["box"]
    assert pictures.crop_modes(stamp(exported["onnx"], tmp_path / "f.onnx", framing)) == ["box", "framed"]


def test_a_face_is_placed_as_it_is_unless_feathered():
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    background = np.full(pictures.PICTURE, 128, np.uint8)
    picture, (x, y, side, _) = pictures.place(face, background, np.random.default_rng(1))
    import cv2

    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(picture[y:y + side, x:x + side], big)  # every pixel, the border too
    faded, _ = pictures.place(face, background, np.random.default_rng(1), feather=0.1)
    border, inner = faded[y, x:x + side], faded[y + side // 2, x + side // 2]
    assert np.abs(border.astype(int) - 128).mean() < np.abs(big[0].astype(int) - 128).mean()
    assert inner == big[side // 2, side // 2]
