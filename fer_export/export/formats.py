"""Export formats by name, each a module with the same three functions (:mod:`.onnx`,
:mod:`.torchscript`), and how an artifact is named and opened."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from ..errors import ArtifactError, InputError
from .artifact import Artifact
from .onnx import export_onnx, load_onnx, stamp_onnx
from .torchscript import export_torchscript, load_torchscript_artifact, stamp_torchscript


class Format(NamedTuple):
    suffix: str
    export: Callable[..., None]
    load: Callable[[Path], Artifact]
    stamp: Callable[[Path, dict], None]


#: Export formats by name: one module each, with the same three functions.
FORMATS: dict[str, Format] = {
    "onnx": Format(".onnx", export_onnx, load_onnx, stamp_onnx),
    "torchscript": Format(".pt", export_torchscript, load_torchscript_artifact, stamp_torchscript),
}


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    for name, f in FORMATS.items():
        if f.suffix == suffix:
            return name
    raise ArtifactError(f"{path}: unknown artifact type {suffix!r}; expected .onnx or .pt")


def open_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    return FORMATS[format_of(path)].load(path)


def sibling(path: Path, tag: str) -> Path:
    """``best_model.onnx`` + ``failed`` -> ``best_model.failed.onnx``."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")


def output_path(fmt: str, checkpoint: str | Path, output: str | Path | None = None) -> Path:
    """Where :func:`export` puts ``checkpoint``'s ``fmt`` artifact: ``output``, else beside the checkpoint."""
    return Path(output) if output else Path(checkpoint).with_suffix(FORMATS[fmt].suffix)


def check_suffix(fmt: str, output: str | Path) -> Path:
    """``output`` when its suffix is ``fmt``'s (the one fer-eval and the loaders read it by), else an InputError."""
    output, suffix = Path(output), FORMATS[fmt].suffix
    if output.suffix.lower() != suffix:
        kind = repr(output.suffix) if output.suffix else "no suffix"
        raise InputError(f"-o {output}: {'an' if fmt[0] in 'aeiou' else 'a'} {fmt} export must be named *{suffix}, not {kind} (its format is read "
                         f"from the suffix)" + (f"; e.g. -o {output.with_suffix(suffix)}" if output.name else ""))
    return output
