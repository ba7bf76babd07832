"""The torch-free runtime on exported artifacts: EmotionClassifier with torch blocked, providers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_without_torch
from fer_export.errors import ArtifactError, ProviderError


def faces(n=5):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, h + 3), dtype=np.uint8) for h in np.linspace(30, 120, n).astype(int)]


def test_predict_without_torch_matches_the_checkpoint(exported, tiny_ckpt, tmp_path):
    import torch

    from fer_export.model import load_checkpoint
    from fer_export.preprocess import preprocess

    crops = faces()
    np.save(tmp_path / "faces.npy", np.array(crops, dtype=object), allow_pickle=True)
    code = ("import sys, json, numpy as np; from fer_export import EmotionClassifier; "
            "clf = EmotionClassifier(sys.argv[1]); "
            "p = clf.predict(list(np.load(sys.argv[2], allow_pickle=True))); "
            "print(json.dumps({'probs': p.tolist(), 'labels': clf.labels, 'torch': 'torch' in sys.modules and sys.modules['torch'] is not None}))")
    proc = run_without_torch(code, str(exported["onnx"]), str(tmp_path / "faces.npy"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["torch"] and len(out["labels"]) == 7
    model, spec = load_checkpoint(tiny_ckpt)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(preprocess(crops, spec))), 1).numpy()
    np.testing.assert_allclose(np.array(out["probs"]), expected, atol=1e-5)


def test_cuda_where_unavailable_is_a_provider_error(exported):
    import onnxruntime as ort

    from fer_export import EmotionClassifier

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderError, match="CUDA"):
        EmotionClassifier(exported["onnx"], provider="cuda")
    clf = EmotionClassifier(exported["onnx"], provider="auto", batch_size=2)
    assert clf.provider == "cpu"
    probs = clf.predict(faces(5))
    assert probs.shape == (5, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert clf.predict([]).shape == (0, 7)


def test_model_without_contract_is_an_artifact_error(tmp_path, exported):
    import onnx

    from fer_export import EmotionClassifier

    proto = onnx.load(str(exported["onnx"]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ArtifactError, match="fer-export onnx"):
        EmotionClassifier(bare)
    with pytest.raises(ArtifactError, match="no such model"):
        EmotionClassifier(tmp_path / "missing.onnx")
