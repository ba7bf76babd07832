"""Opening a run's models (torch-free): the classifier its model settings ask for, and the detector its
detection and crop settings ask for, framing faces as the classifier's spec says."""
from __future__ import annotations

from ..runtime import EmotionClassifier
from .config import WorkConfig, usable_cpus
from .faces import open_detector


def open_models(work: WorkConfig) -> tuple[EmotionClassifier, object]:
    """The classifier and the detector (None for ``detector="none"``) that ``work`` asks for, the
    detector cropping faces as the model's spec frames them. The session's idle threads sleep rather
    than spin: decoding and detection need the same cores."""
    m = work.model
    clf = EmotionClassifier(m.model, m.provider, m.batch_size, model_threads(work), spin=False, self_check=m.self_check)
    return clf, open_detector(work.detection, clf.spec.framing, work.crops)


def model_threads(work: WorkConfig) -> int | None:
    """onnxruntime's intra-op threads: ``work.model.threads`` if set; with the Haar cascade, which runs on
    OpenCV's pool of every core and costs several times the model per frame, half the CPUs (at least
    one); else onnxruntime's default, every core: YuNet runs one thread per worker, and the model is
    most of the work (how much faster every core is: benchmarks/README.md, "video_fps.py")."""
    if work.model.threads is not None or work.detection.detector != "haar":
        return work.model.threads
    return max(1, usable_cpus() // 2)


def describe(clf: EmotionClassifier, detector) -> dict:
    """What loaded, for the run's first line, its journal and its report (picklable: a Dask worker
    sends it)."""
    return {"labels": list(clf.labels), "provider": clf.provider, "model": str(clf.path),
            "detector": detector.name if detector else "none", "detector_path": str(detector.path) if detector else "",
            "detection": detector.recorded() if detector else {}, "self_check": clf.check.line()}
