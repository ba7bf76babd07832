"""The package's shape: no import circles, the two batch runners never import each other, no module or
command grows past what a reader takes in, and the batch stages take their part of the settings only."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fer_export"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: fer_export modules it imports}``, counting imports inside functions too."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                # `from . import x` imports the submodule x when there is one, else a name of the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "fer_export.batch.runner" in graph["fer_export.batch.local"]
    assert "fer_export.export.artifact" in graph["fer_export.export.onnx"]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_runners_are_siblings_over_a_shared_layer():
    graph = import_graph()
    assert "fer_export.batch.dask" not in graph["fer_export.batch.local"]
    assert "fer_export.batch.local" not in graph["fer_export.batch.dask"]
    for runner in ("local", "dask"):  # one template, one per-input layer, one committer
        for shared in ("runner", "per_input", "models", "commit"):
            assert f"fer_export.batch.{shared}" in graph[f"fer_export.batch.{runner}"]


# ---- size: modules and commands a reader can take in ---------------------------------------------

#: Longest module in fer_export/. A module is read whole to be changed; past this, it holds more than
#: one job, and splitting it by job (not by cutting lines) is cheaper than reading it.
MAX_MODULE_LINES = 400


def long_modules(root: Path = PACKAGE, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """``{module path: lines}`` of every module under ``root`` longer than ``limit`` lines."""
    counts = {str(p.relative_to(root.parent)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    return {p: n for p, n in counts.items() if n > limit}


def test_no_module_is_over_the_line_limit():
    assert long_modules() == {}


def test_a_long_module_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    (package / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert long_modules(package) == {"pkg/long.py": MAX_MODULE_LINES + 1}


#: Most options of a command whose --help is one list (every fer-export subcommand, fer-eval): about what
#: one screen of help shows, and what a reader weighs at once. A command past it does several jobs and
#: splits into subcommands, as fer-export did.
MAX_OPTIONS = 14
#: A command whose --help lists its options under headings, one per part of its settings (fer-batch:
#: cli.batch.SectionedCommand): one job, run_batch, whose settings have several parts. The reader
#: weighs one heading at a time, so each heading keeps under MAX_SECTION_OPTIONS; the whole stays
#: under MAX_SECTIONED_OPTIONS, twice a plain command's, so that an option that does not fit a part
#: (or two that say one thing, such as --dask and --scheduler) is seen for what it is.
MAX_SECTION_OPTIONS = 10
MAX_SECTIONED_OPTIONS = 2 * MAX_OPTIONS
#: Commands allowed past the limit, each with the options it has: the count may only go down, and the
#: entry goes when it is within the limit. fer-export onnx keeps the deprecated forms of int8, flip and
#: embed (README, fer-export) until they are removed.
OVER_THE_LIMIT = {"fer-export onnx": 15}


def package_commands() -> dict:
    """Every console script of fer_export.cli and its subcommands, by how a user types them."""
    import importlib
    import tomllib

    import click

    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    found = {}
    for name, target in scripts.items():
        module, func = target.split(":")
        if not module.startswith("fer_export.cli"):
            continue  # fer-train (training/) is the research tool, outside the package
        command = getattr(importlib.import_module(module), func)
        found[name] = command
        if isinstance(command, click.Group):
            found |= {f"{name} {sub}": c for sub, c in command.commands.items()}
    return found


def option_problems(commands: dict) -> list[str]:
    """The commands with more options than their limit (see MAX_OPTIONS), as one line each."""
    import click

    from fer_export.cli.batch import SectionedCommand, section_of

    problems = []
    for name, command in commands.items():
        if isinstance(command, click.Group):
            continue
        options = [p for p in command.params if isinstance(p, click.Option)]
        allowed = OVER_THE_LIMIT.get(name)
        if allowed is not None and len(options) <= MAX_OPTIONS:
            problems.append(f"{name}: {len(options)} options, within the limit: remove it from OVER_THE_LIMIT")
        if isinstance(command, SectionedCommand):
            heads = {}
            for p in options:
                heads.setdefault(section_of(p.name), []).append(p.name)
            problems += [f"{name}: no heading for {names}" for head, names in heads.items() if head is None]
            problems += [f"{name}: {len(names)} options under {head} (most {MAX_SECTION_OPTIONS})"
                         for head, names in heads.items() if head and len(names) > MAX_SECTION_OPTIONS]
            limit = MAX_SECTIONED_OPTIONS
        else:
            limit = MAX_OPTIONS
        if len(options) > (allowed or limit):
            problems.append(f"{name}: {len(options)} options (most {allowed or limit})")
    return problems


def test_no_command_has_too_many_options():
    commands = package_commands()
    assert {"fer-batch", "fer-eval", "fer-export onnx", "fer-export int8"} <= set(commands)
    assert set(OVER_THE_LIMIT) <= set(commands)
    assert option_problems(commands) == []


def test_a_command_with_too_many_options_is_found():
    import click

    from fer_export.cli.batch import SectionedCommand

    def command(n, cls=click.Command, prefix="opt"):
        return cls(name="c", params=[click.Option([f"--{prefix}{k}"]) for k in range(n)])

    assert option_problems({"fine": command(MAX_OPTIONS)}) == []
    assert option_problems({"big": command(MAX_OPTIONS + 1)}) == [f"big: {MAX_OPTIONS + 1} options (most {MAX_OPTIONS})"]
    assert option_problems({"fer-export onnx": command(10)}) == [
        "fer-export onnx: 10 options, within the limit: remove it from OVER_THE_LIMIT"]
    loose = option_problems({"grouped": command(2, SectionedCommand)})
    assert loose == ["grouped: no heading for ['opt0', 'opt1']"]
    crowded = SectionedCommand(name="c", params=[click.Option([f"--min-face-{k}", "min_face"])
                                                 for k in range(MAX_SECTION_OPTIONS + 1)])
    assert option_problems({"grouped": crowded}) == [
        f"grouped: {MAX_SECTION_OPTIONS + 1} options under Detection (most {MAX_SECTION_OPTIONS})"]
    names = ["min_face"] * MAX_SECTION_OPTIONS + ["model"] * MAX_SECTION_OPTIONS + ["out"] * MAX_SECTION_OPTIONS
    wide = SectionedCommand(name="c", params=[click.Option([f"--o{k}", name]) for k, name in enumerate(names)])
    assert len(names) > MAX_SECTIONED_OPTIONS
    assert option_problems({"grouped": wide}) == [f"grouped: {len(names)} options (most {MAX_SECTIONED_OPTIONS})"]


def test_every_fer_batch_option_is_under_its_part():
    """fer-batch --help lists each option under the heading of the part of the settings that owns it."""
    from click.testing import CliRunner

    from fer_export.batch.settings import OWNER
    from fer_export.cli.batch import _PART_TITLES, main

    text = CliRunner().invoke(main, ["--help"]).output
    assert "Other options" not in text
    heads = [line.rstrip(":") for line in text.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert heads == ["Outputs", "Model", "Detection", "Crops", "Video frames", "Running"]
    for p in main.params:
        if p.name in OWNER:
            section = text.split(f"\n{_PART_TITLES[OWNER[p.name]]}:\n")[1].split("\n\n")[0]
            assert p.opts[-1] in section, (p.name, section)


# ---- stages take their part of the settings, not the run ------------------------------------------

#: The stages of a batch run: each takes the settings part it uses, never the whole run's config.
STAGES = ("fer_export.batch.faces", "fer_export.batch.crops", "fer_export.batch.yunet", "fer_export.batch.tracking",
          "fer_export.batch.sources")
RUN_CONFIGS = {"WorkConfig", "BatchConfig"}


def run_config_imports(source: str) -> list[str]:
    """The imports in ``source`` (a module of fer_export.batch) of the whole run config: the module
    fer_export.batch.config, or WorkConfig/BatchConfig from anywhere."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module, names = node.module or "", {a.name for a in node.names}
            config_module = (node.level == 1 and module == "config") or module.endswith("batch.config") \
                or ("config" in names and (node.level == 1 and not module or module.endswith("batch")))
            if config_module or names & RUN_CONFIGS:
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Import):
            found += [ast.unparse(node) for a in node.names if a.name.endswith("batch.config")]
    return found


def test_stages_do_not_import_the_run_config():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    assert set(STAGES) <= set(modules)
    for stage in STAGES:
        assert run_config_imports(modules[stage].read_text()) == [], stage
        assert "fer_export.batch.config" not in import_graph()[stage]
    assert "fer_export.batch.settings" in import_graph()["fer_export.batch.faces"]


def test_an_import_of_the_run_config_is_found():
    assert run_config_imports("from .config import WorkConfig") == ["from .config import WorkConfig"]
    assert run_config_imports("from fer_export.batch.config import usable_cpus") != []
    assert run_config_imports("from . import config") != []
    assert run_config_imports("from .elsewhere import BatchConfig") != []
    assert run_config_imports("import fer_export.batch.config") != []
    assert run_config_imports("from .settings import DetectionSettings\nfrom ..spec import Framing") == []
