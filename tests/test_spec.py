import json

import pytest

from fer_export.errors import SpecError
from fer_export.spec import FER2013_LABELS, SEED_SPEC, ModelSpec


def test_seed_spec_is_the_seed_recipe():
    assert SEED_SPEC.labels == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert SEED_SPEC.input_size == (224, 224)
    assert SEED_SPEC.channels == 1
    assert SEED_SPEC.mean == (0.485,) and SEED_SPEC.std == (0.229,)
    assert SEED_SPEC.resize == "pil_bilinear"
    assert SEED_SPEC.num_classes == 7


def test_json_round_trip_is_lossless():
    spec = ModelSpec(arch="resnet18_s1", input_size=(48, 40), labels=("a", "b", "c"))
    text = spec.to_json()
    assert json.loads(text)["input_size"] == [48, 40]
    assert ModelSpec.from_json(text) == spec
    assert ModelSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("change, message", [
    ({"arch": "vgg"}, "arch"),
    ({"labels": ["happy", "happy"]}, "unique"),
    ({"labels": ["only"]}, "2 to 1000"),
    ({"input_size": [8, 8]}, "input_size"),
    ({"channels": 2}, "channels"),
    ({"mean": [0.5, 0.5]}, "one value per channel"),
    ({"std": [0.0]}, "std must be 1e-06 to"),
    ({"labels": ["happy", "=1+1"]}, "printable text"),
    ({"resize": "nearest"}, "resize"),
    ({"colour": "blue"}, "unknown model spec fields"),
    ({"version": 99}, "newer"),
])
def test_invalid_specs_are_rejected_with_the_reason(change, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict({**SEED_SPEC.to_dict(), **change})


def test_malformed_json_is_a_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{labels: ")


def test_labels_constant_matches_seed():
    assert FER2013_LABELS == SEED_SPEC.labels
