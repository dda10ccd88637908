"""The mypyc-compiled hot path: built, current, and identical in output to its pure-Python source.

The modules listed for mypyc in pyproject.toml are compiled in place by ``make install`` (ADR
0006). These tests fail if the build silently fell back to pure Python, if a source was edited
after its extension was built (the stale extension would shadow the edit), and if the compiled
modules give any output other than the same sources run by the interpreter.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import FunctionType, ModuleType

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def _compiled_sources() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]["include"]
    return [ROOT / path for path in include]


def _module_name(source: Path) -> str:
    return ".".join(source.relative_to(ROOT / "src").with_suffix("").parts)


COMPILED = [_module_name(source) for source in _compiled_sources()]

# Run in a fresh interpreter: replay captures and print their records as JSON. With "pure", a
# meta-path finder placed first loads the compiled modules from their .py sources instead.
_CHILD = r"""
import importlib.abc, importlib.util, json, os, sys

mode, modules, captures = sys.argv[1], set(json.loads(sys.argv[2])), json.loads(sys.argv[3])


class SourceOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in modules:
            return None
        for entry in path or sys.path:
            candidate = os.path.join(entry, fullname.rpartition(".")[2] + ".py")
            if os.path.exists(candidate):
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


if mode == "pure":
    sys.meta_path.insert(0, SourceOnly())

import msgspec

from a2z.agent.flows.table import FlowConfig
from a2z.agent.replay import replay

encode = msgspec.json.Encoder().encode
out = {"files": {name: sys.modules[name].__file__ for name in sorted(modules) if name in sys.modules}}
for path in captures:
    try:
        records, pipeline, _ = replay(path, FlowConfig(uid_seed=7))
        lines = [encode(record).decode() for record in records]
    except Exception as exc:  # a capture the reader refuses: compare the refusal too
        lines = [type(exc).__name__ + ": " + str(exc)]
        pipeline = None
    stats = pipeline.stats if pipeline is not None else None
    out[path] = {
        "records": lines,
        "stats": [stats.packets, stats.bytes, stats.records, stats.weirds, stats.ignored,
                  stats.evictions] if stats is not None else None,
    }
print(json.dumps(out))
"""


def _replay_in_child(mode: str, captures: list[str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, json.dumps(COMPILED), json.dumps(captures)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _is_compiled(module: ModuleType) -> bool:
    """Loaded from an extension, and no function of it is interpreted bytecode.

    Not judged by ``__file__``: mypyc sets the ``__file__`` of a module that another compiled
    module imported first to a path computed for a regular install (site-packages), even when
    an editable install loaded it from src/.
    """
    functions = [
        value
        for value in vars(module).values()
        if isinstance(value, FunctionType) and value.__module__ == module.__name__
    ]
    return isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader) and not functions


def test_hot_path_modules_are_compiled_extensions() -> None:
    assert COMPILED, "pyproject.toml lists no modules for mypyc"
    pure = [name for name in COMPILED if not _is_compiled(importlib.import_module(name))]
    assert not pure, f"imported as pure Python, not compiled (run `make install`): {pure}"


def test_the_interpreted_reference_is_detected_as_pure_python() -> None:
    assert not _is_compiled(importlib.import_module("a2z.agent.replay"))


def test_compiled_extensions_are_newer_than_their_sources() -> None:
    """The in-place extension beside each source must postdate it, or it shadows an edit."""
    stale = []
    for source in _compiled_sources():
        built = [source.with_suffix(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]
        existing = [path for path in built if path.exists()]
        if not existing or max(path.stat().st_mtime for path in existing) < source.stat().st_mtime:
            stale.append(str(source.relative_to(ROOT)))
    assert not stale, f"no extension newer than the source (run `make install`): {stale}"


def test_compiled_and_pure_python_give_identical_records() -> None:
    captures = sorted(
        str(path)
        for path in [*DATA.iterdir(), *(DATA / "bad").iterdir()]
        if path.suffix in (".pcap", ".pcapng", ".cap")
    )
    captures.append(str(ROOT / "src" / "a2z" / "demo" / "data" / "attack.pcap"))
    assert len(captures) > 50
    compiled = _replay_in_child("compiled", captures)
    pure = _replay_in_child("pure", captures)
    compiled_files = compiled.pop("files")
    pure_files = pure.pop("files")
    assert isinstance(compiled_files, dict)
    assert isinstance(pure_files, dict)
    assert all(not path.endswith(".py") for path in compiled_files.values())
    assert all(path.endswith(".py") for path in pure_files.values())
    assert set(pure_files) == set(COMPILED)
    records = sum(len(result["records"]) for result in pure.values())  # type: ignore[index]
    assert records > 1000
    for capture in captures:
        assert compiled[capture] == pure[capture], capture
