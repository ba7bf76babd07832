"""Typed errors. Each message says what was wrong, with which file, and what to do.

The CLI turns any :class:`FerExportError` into a one-line message and exit status 2 (usage and
input errors) at the edge only; library code raises, it never prints or exits.
"""
from __future__ import annotations


class FerExportError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class SpecError(FerExportError, ValueError):
    """A model spec (the model's contract) is missing, malformed or inconsistent."""


class CheckpointError(FerExportError):
    """A checkpoint file cannot be used: missing, not a checkpoint, truncated, unsafe or mismatched."""


class ArtifactError(FerExportError):
    """An exported model (.onnx / .pt) is missing, unreadable or lacks the fer-export metadata."""


class InputError(FerExportError):
    """An input image, video or data folder cannot be read."""


class OutputError(FerExportError):
    """An output cannot be written: it would replace an input or another output, its folder is not
    writable, the disk is full, another run holds it."""


class ProviderError(FerExportError):
    """An onnxruntime execution provider was asked for but is not available."""


class ExportError(FerExportError):
    """Exporting a model failed."""


class ParityError(ExportError):
    """An exported artifact does not reproduce the PyTorch model within tolerance."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class DependencyError(FerExportError, ImportError):
    """An optional dependency is needed for this feature but not installed."""


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or raise a :class:`DependencyError` saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{feature} needs the '{module}' package, which is not installed: "
            f"pip install 'fer-export[{extra}]'"
        ) from exc


class SelfCheckError(ArtifactError):
    """A model's self-check failed where it runs: its probe faces do not give the probabilities it records."""


class SelfCheckWarning(UserWarning):
    """A bundled model failed its self-check on this machine and a correct fallback runs instead."""
