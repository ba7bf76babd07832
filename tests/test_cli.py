"""Guard: every console script (and every subcommand) has help text and is exercised by a test."""
import importlib
import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _command(name: str) -> click.Command:
    module, func = SCRIPTS[name].split(":")
    return getattr(importlib.import_module(module), func)


def _invocations():
    for name in sorted(SCRIPTS):
        cmd = _command(name)
        yield name, []
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.commands):
                yield name, [sub]


@pytest.mark.parametrize("name, sub", list(_invocations()), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_command_has_help(name, sub):
    result = CliRunner().invoke(_command(name), [*sub, "--help"], prog_name=name)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:")
    description = result.output.split("Options:")[0].split("\n", 1)[1]
    assert len(description.split()) >= 8, f"{name} {' '.join(sub)} has no real help text:\n{result.output}"


@pytest.mark.parametrize("name, sub", list(_invocations()), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_command_is_tested(name, sub):
    """Some test other than this guard runs the command (by name, or its module's main()) and subcommand."""
    module = SCRIPTS[name].split(":")[0]
    sources = [p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    users = [s for s in sources if re.search(re.escape(name) + "|" + re.escape(module), s)]
    assert users, f"no test runs {name} ({module})"
    if sub:
        assert any(re.search(rf"""["']{re.escape(sub[0])}["']""", s) for s in users), f"no test runs {name} {sub[0]}"


@pytest.mark.parametrize("missing, extra", [("torch", "train"), ("onnx.helper", "train"), ("distributed", "dask")])
def test_a_light_install_is_told_which_extra_to_install(missing, extra):
    """Without torch (the light install), a command that needs it ends in one line naming the extra."""
    import click
    from click.testing import CliRunner

    from fer_export.cli import library_errors

    @click.command()
    @library_errors
    def needs_it():
        raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

    res = CliRunner().invoke(needs_it, [])
    assert res.exit_code == 2 and f"pip install 'fer-export[{extra}]'" in res.output, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
