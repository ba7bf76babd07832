"""Guard: every console script installs, has help text, and is exercised by some test."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_has_help(name):
    module, func = SCRIPTS[name].split(":")
    code = f"import sys; sys.argv=[{name!r}, '--help']; from {module} import {func}; {func}()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and len(r.stdout) > 200, r.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_is_tested(name):
    """Some test other than this guard runs the command (by name or through its main())."""
    module = SCRIPTS[name].split(":")[0]
    others = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    pattern = re.compile(re.escape(name) + "|" + re.escape(module))
    assert any(pattern.search(p.read_text()) for p in others), f"no test runs {name} ({module})"
