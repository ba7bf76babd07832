"""YuNet on onnxruntime (torch-free): a session of a YuNet file with the 2023+ outputs, and their
decoding into faces exactly as ``cv2.FaceDetectorYN`` decodes them. :class:`.faces.YuNetDetector`
runs it; a YuNet file without those outputs runs through OpenCV there instead."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError

YUNET_STRIDES = (8, 16, 32)
YUNET_OUTPUTS = tuple(f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES)
YUNET_TOP_K = 5000


def yunet_session(path: Path, required: bool = False):
    """An onnxruntime session of the YuNet file at ``path`` if it has the 2023+ outputs; else None
    (or, ``required``, an :class:`ArtifactError`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        if required:
            raise ArtifactError(f"{path}: onnxruntime cannot load this YuNet model: {exc}") from exc
        return None
    if set(YUNET_OUTPUTS) <= {o.name for o in session.get_outputs()} and len(session.get_inputs()) == 1:
        return session
    if required:
        raise ArtifactError(f"{path}: not a YuNet model with outputs {', '.join(YUNET_OUTPUTS)}; use --detector haar "
                            "or another YuNet file")
    return None


def yunet_decode(session, input_name: str, image: np.ndarray, threshold: float, nms: float) -> list[tuple]:
    """YuNet's faces in a BGR ``image``: the image zero-padded to multiples of 32, each stride's grid
    decoded (score = sqrt(cls * obj), box centre and landmarks as grid offsets, sides as exp), then
    OpenCV's NMS, boxes overlapping by more than ``nms`` (IoU) merged: what ``cv2.FaceDetectorYN.detect``
    returns with that NMS threshold, as ``(box, score, landmarks)``."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    blob = np.zeros((1, 3, ph, pw), np.float32)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    out = dict(zip(YUNET_OUTPUTS, session.run(list(YUNET_OUTPUTS), {input_name: blob})))
    boxes, scores, marks = [], [], []
    for stride in YUNET_STRIDES:
        score = np.sqrt(np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1) * np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1))
        idx = np.flatnonzero(score >= threshold)
        if not idx.size:
            continue
        row, col = np.divmod(idx, pw // stride)
        b = out[f"bbox_{stride}"].reshape(-1, 4)[idx]
        side_w, side_h = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
        x, y = (col + b[:, 0]) * stride - side_w / 2, (row + b[:, 1]) * stride - side_h / 2
        k = out[f"kps_{stride}"].reshape(-1, 10)[idx].astype(np.float64)
        k[:, 0::2] = (k[:, 0::2] + col[:, None]) * stride
        k[:, 1::2] = (k[:, 1::2] + row[:, None]) * stride
        boxes += np.stack([x, y, side_w, side_h], 1).tolist()
        scores += score[idx].tolist()
        marks += k.tolist()
    if not boxes:
        return []
    keep = np.asarray(cv2.dnn.NMSBoxes(boxes, scores, threshold, nms, top_k=YUNET_TOP_K)).ravel()
    return [(tuple(boxes[i]), float(scores[i]), tuple(marks[i])) for i in keep]
