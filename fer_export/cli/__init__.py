"""Thin click commands. Each parses options, calls one library function, prints the returned
report and exits with its code. Library errors become a one-line message here, at the edge only.

Exit codes shared by every command:
  0  success
  1  the job ran but something failed (a parity check, some batch inputs); everything else was written
  2  usage or input error (bad option, missing file, unreadable checkpoint, unavailable provider)
  130 interrupted (Ctrl-C)
"""
from __future__ import annotations

import functools
import math
import sys
import warnings

import click

from ..errors import FerExportError, SelfCheckWarning

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Optional packages by import name, and the extra that installs them.
_EXTRAS = {"torch": "train", "torchvision": "train", "onnx": "train", "onnxscript": "train", "matplotlib": "train",
           "dask": "dask", "distributed": "dask"}


class UserError(click.ClickException):
    """A library error shown as ``Error: <message>`` with exit status 2."""

    exit_code = EXIT_USAGE


def library_errors(fn):
    """Decorator: turn :class:`FerExportError` raised by library code into a clean CLI error, an
    ``OSError`` the library did not foresee (a full disk, a vanished folder) into one naming its file,
    and Ctrl-C into a one-line message and exit status 130 (click's own handling says "Aborted!" and
    exits 1, which means "a check failed")."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", SelfCheckWarning)
                warnings.showwarning = _warning_line
                return fn(*args, **kwargs)
        except FerExportError as exc:
            raise UserError(str(exc)) from exc
        except ModuleNotFoundError as exc:  # a light install (no torch) asked for training or export
            extra = _EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            raise UserError(f"this needs the '{exc.name}' package, which is not installed (the light install reads "
                            f"exported .onnx models only): pip install 'fer-export[{extra}]'") from exc
        except KeyboardInterrupt:
            echo_err("interrupted (Ctrl-C); no unfinished output was put in place")
            exit_with(EXIT_INTERRUPTED)
        except OSError as exc:
            from ..outputs import os_error_reason

            where = f"{exc.filename}: " if exc.filename is not None else ""
            raise UserError(f"{where}{os_error_reason(exc)}") from exc

    return wrapper


_SHOW_WARNING = warnings.showwarning


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """fer-export's own warnings as one line on stderr (``warning: ...``), not Python's file-and-line
    form; other packages' warnings as Python shows them."""
    if issubclass(category, SelfCheckWarning):
        echo_err(f"warning: {message}")
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


class FiniteFloat(click.FloatRange):
    """A float option that refuses ``nan`` and ``inf`` (which compare False with every bound)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def exit_with(code: int) -> None:
    sys.exit(code)
