"""The self-check's probe, made where a file is made: the bundled probe faces through the file's
reference. :mod:`fer_export.probe` checks it where the file runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..probe import TOLERANCE, Probe, probe_faces
from ..runtime import EmotionClassifier, softmax
from ..spec import META_FLIP_BELOW, META_PRECISION, META_TTA, UNCERTAIN
from .flip import FIRST_PASS

#: A file that mirrors its unsure faces (``hflip-uncertain``) leaves out of its probe the faces whose
#: first-pass top probability is this close to its threshold: the last digits that kernels may change
#: there would decide whether the face is mirrored, and move its answer by far more than a tolerance.
FLIP_MARGIN = 0.02


def make_probe(path: str | Path) -> Probe:
    """The probe for the ONNX file at ``path``: the bundled faces through the file's reference (an
    int8 file's literal run), on the CPU."""
    clf = EmotionClassifier(path, "cpu", self_check=False, literal=True)
    precision = clf.metadata.get(META_PRECISION, "fp32")
    precision = precision if precision in TOLERANCE else "fp32"
    faces = probe_faces()
    if clf.metadata.get(META_TTA) == UNCERTAIN:
        faces = faces[~_near_threshold(path, clf, faces, float(clf.metadata[META_FLIP_BELOW]))]
    return Probe(faces, clf.predict(list(faces)), "int8 literal" if precision == "int8" else precision,
                 TOLERANCE[precision])


def _near_threshold(path, clf, faces: np.ndarray, flip_below: float) -> np.ndarray:
    """Which ``faces`` a flip file's first pass (literal) gives a top probability within FLIP_MARGIN of ``flip_below``."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load_model(str(path))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(FIRST_PASS, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = clf.prepare(list(faces))
    if clf.raw:
        first = np.concatenate([sess.run([FIRST_PASS], {sess.get_inputs()[0].name: g[None, None]})[0] for g in x])
    else:
        first = sess.run([FIRST_PASS], {sess.get_inputs()[0].name: x})[0]
    return np.abs(softmax(first).max(axis=1) - flip_below) < FLIP_MARGIN
