"""The documentation names what exists: every ``iqa_map`` import in a code block and every backticked
``iqa_map.x.y`` path of the README and docs/ resolves (a module moved without its docs fails here)."""
import ast
import importlib
import re

import pytest

from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOTTED = re.compile(r"`(iqa_map(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    """A module, or an attribute of the longest module prefix (``iqa_map.core.map.pipeline.enhance``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _imports(text: str):
    """The ``iqa_map`` names that the python code blocks of ``text`` import."""
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if not re.match(r"\s*(from|import) iqa_map", line):
                continue
            node = ast.parse(line.strip()).body[0]
            if isinstance(node, ast.ImportFrom):
                yield from (f"{node.module}.{a.name}" for a in node.names)
            else:
                yield from (a.name for a in node.names)


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_documented_code_paths_exist(doc):
    text = doc.read_text()
    names = sorted(set(DOTTED.findall(text)) | set(_imports(text)))
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"{doc.relative_to(REPO)} names what does not exist: {missing}"


def test_the_walk_sees_paths_and_imports():
    text = "`iqa_map.core.map.pipeline.enhance`\n```python\nfrom iqa_map.core import edict, sampling\n```\n"
    assert sorted(set(DOTTED.findall(text)) | set(_imports(text))) == [
        "iqa_map.core.edict", "iqa_map.core.map.pipeline.enhance", "iqa_map.core.sampling"]
    assert _resolves("iqa_map.core.map.pipeline.enhance") and _resolves("iqa_map.core.sampling")
    assert not _resolves("iqa_map.core.edict")


PATH = re.compile(r"(?<![\w./-])((?:core|cli|nodes|training|benchmarks|tools|tests)/[\w/]+\.(?:py|json|md))")


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_documented_files_exist(doc):
    missing = sorted({p for p in PATH.findall(doc.read_text()) if not (REPO / p).exists()})
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {missing}"
    assert PATH.findall("see `core/map/settings.py` and cli/x/y.py.") == ["core/map/settings.py", "cli/x/y.py"]
