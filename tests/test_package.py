"""Packaging rules: loads under any folder name, core never imports ComfyUI, no torch pin."""
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from helpers import REPO


def test_core_import_does_not_import_comfyui():
    code = ("import sys, iqa_map.core.sampling.edict, iqa_map.core.models, iqa_map.core.sampling.ddim; "
            "bad = [m for m in sys.modules if m == 'comfy' or m.startswith('comfy.') or m == 'folder_paths']; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def _node_count() -> int:
    from iqa_map.nodes import NODES
    return len(NODES)


def test_pack_loads_under_any_folder_name(tmp_path):
    """ComfyUI imports custom_nodes/<folder>/__init__.py with the folder name as module name, and takes the V3
    path (``comfy_entrypoint``) only when the module has no NODE_CLASS_MAPPINGS."""
    dest = tmp_path / "ComfyUI-IQA-MAP-main"
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".venv", ".git", "out", "runs", "__pycache__"))
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ComfyUI-IQA-MAP-main', r'{dest / '__init__.py'}',"
        f" submodule_search_locations=[r'{dest}'])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)\n"
        "import inspect\n"
        "assert not hasattr(mod, 'NODE_CLASS_MAPPINGS') and inspect.iscoroutinefunction(mod.comfy_entrypoint)\n"
        f"assert len(sys.modules['ComfyUI-IQA-MAP-main.nodes'].NODES) == {_node_count()}\n"
        "assert mod.WEB_DIRECTORY == './web'\n"
        "assert 'comfy_api' not in sys.modules, 'ComfyUI API imported before ComfyUI asked for the nodes'\n"
        "assert 'iqa_map' not in sys.modules, 'the pack must not import itself by its library name'\n"
        "edict = sys.modules['ComfyUI-IQA-MAP-main'].__name__\n"
        "import importlib; importlib.import_module('ComfyUI-IQA-MAP-main.core.sampling.edict')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def _self_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "iqa_map":
            yield node.lineno
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "iqa_map" for a in node.names):
            yield node.lineno


def test_no_absolute_self_imports():
    files = [REPO / "__init__.py"] + [p for sub in ("core", "nodes", "training", "cli")
                                      for p in (REPO / sub).rglob("*.py")]
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in files for n in _self_imports(p)]
    assert not offenders, f"use relative imports inside the pack: {offenders}"


def test_comfy_api_is_imported_only_inside_functions():
    """Only the V3 builder imports ComfyUI's API, when ComfyUI loads the pack (CI has no ComfyUI)."""
    offenders = []
    for p in [REPO / "__init__.py"] + [p for sub in ("core", "nodes", "cli") for p in (REPO / sub).rglob("*.py")]:
        tree = ast.parse(p.read_text())
        inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f)}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n.split(".")[0] == "comfy_api" for n in names) and id(node) not in inside:
                offenders.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_torch_is_not_a_declared_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"] + [
        line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in deps}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert {"diffusers", "safetensors", "numpy"} <= names
    comfy_reqs = {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
                  for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")}
    # optional (issue 36): the built-ins are the pack's own code; pyiqa is an extra, OpenCV used only when present
    assert not names & {"pyiqa", "opencv-python", "opencv-python-headless"}
    extras = meta["project"]["optional-dependencies"]
    assert any(d.startswith("pyiqa") for d in extras["pyiqa"]) and any(d.startswith("pyiqa") for d in extras["test"])
    pyproject_names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in meta["project"]["dependencies"]}
    # ComfyUI-Manager installs requirements.txt: the same list less diffusers, which only the library's and the
    # command line's Stable Diffusion loading needs (tests/test_builtin.py runs the nodes without it)
    assert pyproject_names - comfy_reqs == {"diffusers"} and comfy_reqs <= pyproject_names
    assert importlib.util.find_spec("iqa_map") is not None


def test_registry_metadata():
    """What the Comfy Registry and ComfyUI-Manager read."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] and project["version"] and len(project["description"]) > 20
    assert project["license"] == "Apache-2.0" and project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    # The oldest ComfyUI whose V3 node API (comfy_api.latest) the nodes are tested on; ComfyUI's own
    # comfy_config parser reads it from [tool.comfy].
    assert comfy["requires-comfyui"] == ">=0.3.64"
    assert (REPO / "docs" / "icon.png").is_file() and comfy["Icon"].endswith("docs/icon.png")
    assert (REPO / "web" / "js").is_dir()
    # The registry's OS and accelerator lists (comfy-cli's config_parser accepts exactly these prefixes/values).
    classifiers = project["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    accelerators = [c for c in classifiers if c.startswith("Environment ::")]
    assert accelerators and set(accelerators) <= {f"Environment :: {a}" for a in (
        "GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal")}


def test_the_version_is_declared_once_and_the_changelog_names_it():
    import iqa_map

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version) and iqa_map.__version__ == version
    entries = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d)$", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert entries and entries[0][0] == version, "add a CHANGELOG entry for the version in pyproject.toml"
    assert [tuple(map(int, v.split("."))) for v, _ in entries] == sorted(
        (tuple(map(int, v.split("."))) for v, _ in entries), reverse=True)


def test_the_library_entry_points_are_at_the_top():
    import iqa_map
    from iqa_map.core.map import pipeline, settings

    assert iqa_map.enhance is pipeline.enhance and iqa_map.MapSettings is settings.MapSettings
    with pytest.raises(AttributeError):
        iqa_map.no_such_thing


#: The packages whose modules a newcomer reads: each module at most this many lines.
PACKAGES, MAX_LINES = ("core", "cli", "nodes", "training"), 350


def _modules(*tops):
    return [p for top in tops for p in sorted((REPO / top).rglob("*.py"))]


def test_modules_are_small():
    sizes = {str(p.relative_to(REPO)): p.read_text().count("\n") for p in _modules(*PACKAGES)}
    assert len(sizes) > 50 and any(k.startswith("cli/") for k in sizes)  # the walk sees every package
    big = {k: n for k, n in sizes.items() if n > MAX_LINES}
    assert not big, f"split these modules (at most {MAX_LINES} lines): {big}"


def _imported_privates(path, root=REPO):
    """(line, package the name comes from, name) for each ``_private`` name imported by ``path``, the package
    as a path under ``root`` (relative imports resolved; ``iqa_map.x`` is ``x``)."""
    here = path.parent.relative_to(root).parts
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            target = here[:len(here) - node.level + 1] + (tuple(node.module.split(".")) if node.module else ())
        elif (node.module or "").split(".")[0] == "iqa_map":
            target = tuple(node.module.split(".")[1:])
        else:
            continue
        package = target if root.joinpath(*target).is_dir() else target[:-1]  # a package, or a module's package
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                yield node.lineno, "/".join(package), alias.name


def test_no_private_imports_across_packages():
    """A ``_name`` is its package's business: another package (core/map from core/sr, cli from core, ...)
    imports only public names, so a module can change its internals without breaking a neighbour."""
    crossing = []
    for path in _modules(*PACKAGES, "benchmarks", "tools"):
        mine = "/".join(path.parent.relative_to(REPO).parts)
        for line, package, name in _imported_privates(path):
            if package != mine:
                crossing.append(f"{path.relative_to(REPO)}:{line} imports {name} from {package}")
    assert not crossing, "make these public or move them: " + "; ".join(crossing)


def test_the_private_import_walk_sees_imports(tmp_path):
    """The walk above resolves relative and absolute imports (so its silence means something)."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "core" / "map").mkdir(parents=True)
    (tmp_path / "core" / "map" / "loop.py").write_text("")
    mod = tmp_path / "cli" / "workers.py"
    mod.write_text("from ..core.map.loop import _step\nfrom . import _enhance_one\nfrom iqa_map.core import _x, y\n")
    assert sorted(_imported_privates(mod, tmp_path)) == [(1, "core/map", "_step"), (2, "cli", "_enhance_one"),
                                                        (3, "core", "_x")]


def test_the_batch_workers_import_only_core():
    """Ray ships cli/workers.py to its worker processes: what it imports from the pack is core, nothing of the
    command line around it."""
    tree = ast.parse((REPO / "cli" / "workers.py").read_text())
    inside = [(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert inside, "the workers use core through relative imports"
    assert all(level == 2 and (module or "").split(".")[0] == "core" for level, module in inside), inside


#: What a published package must hold, and what it must not (tests, benchmarks, training, tools, figures).
PACKAGE_MUST = ("__init__.py", "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "requirements.txt",
                "nodes/v3.py", "core/map/settings.py", "cli/__init__.py", "web/js/iqa_score.js",
                "core/models/weights/builtin_denoiser.safetensors", "core/priors/data/cnniqa_builtin.safetensors")
PACKAGE_MUST_NOT = ("tests/", "benchmarks/", "training/", "tools/", ".ci/", "Makefile")


def _package_files(repo) -> list[str]:
    """The files ``comfy node publish`` zips: comfy-cli's own selection when it is installed, else the same rule
    (git-tracked files, minus the gitwildmatch patterns of .comfyignore)."""
    try:
        from comfy_cli.file_utils import zip_files
    except ImportError:
        zip_files = None
    if zip_files is not None:
        import os
        import zipfile

        cwd = os.getcwd()
        try:
            os.chdir(repo)
            zip_files("package.zip")
            with zipfile.ZipFile("package.zip") as z:
                return sorted(z.namelist())
        finally:
            (repo / "package.zip").unlink(missing_ok=True)
            os.chdir(cwd)
    import warnings

    pathspec = pytest.importorskip("pathspec", reason="pathspec (a test dependency) reads .comfyignore")
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    lines = [ln.strip() for ln in (repo / ".comfyignore").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    with warnings.catch_warnings():  # comfy-cli's pattern flavour, which newer pathspec calls deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
    return sorted(f for f in tracked if not spec.match_file(f))


def test_the_registry_package_holds_the_pack_and_nothing_else(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    files = _package_files(clone)
    missing = [m for m in PACKAGE_MUST if m not in files]
    assert not missing, f"the package lacks {missing}"
    leaked = [f for f in files if f.startswith(PACKAGE_MUST_NOT) or f.endswith((".png", ".jpg")) and
              f.startswith("docs/")]
    assert not leaked, f"the package holds {leaked[:10]}"
    examples = [f for f in files if f.startswith("example_workflows/")]
    assert examples and {f.rsplit(".", 1)[0] for f in examples if f.endswith(".json")} == \
        {f.rsplit(".", 1)[0] for f in examples if f.endswith(".jpg")}, "every example workflow with its thumbnail"
    size = sum((clone / f).stat().st_size for f in files)
    assert size < 25 * 2 ** 20, f"{size / 2 ** 20:.1f} MiB"


def test_no_runtime_installs():
    """A node pack must not pip-install at run time (ComfyUI-Manager owns the environment)."""
    files = [REPO / "__init__.py"] + [p for sub in ("core", "nodes") for p in (REPO / sub).rglob("*.py")]
    for p in files:
        text = p.read_text()
        assert "subprocess" not in text and "pip.main" not in text and "ensurepip" not in text, p


def _github_slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_documentation_links_resolve():
    """Every relative link in the README and docs/ names a file that exists and, with #anchor, a heading in it
    (GitHub's slugs): moving a section must not leave dead links behind."""
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    anchors = {}
    for doc in docs:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        anchors[doc.resolve()] = {_github_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    dead = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc.resolve()
            if not dest.exists():
                dead.append(f"{doc.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors.get(dest, set()):
                dead.append(f"{doc.name}: {target} (no such heading)")
    assert not dead, "\n".join(dead)


def test_every_python_package_is_shipped():
    """A folder with an __init__.py that pyproject does not list works in an editable install only."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = {"iqa_map." + ".".join(p.parent.relative_to(REPO).parts) for sub in ("core", "nodes", "training", "cli")
             for p in (REPO / sub).rglob("__init__.py")}
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def _core_imports() -> dict:
    """core module -> the core modules it imports (relative imports, at any depth: a function-level import
    is a circle too, it only fails later)."""
    core = REPO / "core"
    mods = {}
    for p in core.rglob("*.py"):
        rel = p.relative_to(core).with_suffix("")
        pkg = list(rel.parts[:-1])
        name = ".".join(pkg if rel.name == "__init__" else rel.parts)
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                if node.module:
                    deps.add(".".join(base + node.module.split(".")))
                else:
                    deps.update(".".join(base + [a.name]) for a in node.names)
        mods[name] = deps

    def resolve(d):
        while d and d not in mods:
            d = d.rsplit(".", 1)[0] if "." in d else ""
        return d
    return {m: {resolve(d) for d in ds if resolve(d) and resolve(d) != m} for m, ds in mods.items()}


def test_no_import_circle_in_core():
    graph = _core_imports()
    assert graph["quality.qmap"] and "priors.base" in graph["quality.qmap"]  # the walk sees imports
    cycles, done = [], set()

    def visit(node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for m in sorted(graph):
        if m not in done:
            visit(m, [m])
    assert not cycles, "import circles in core: " + "; ".join(" -> ".join(c) for c in cycles)


def test_core_is_split_by_concept():
    """At most 12 top-level entries in core (modules and sub-packages): a newcomer maps each to a part of the
    method (sampling, map, quality, priors, models, sr, io) or to a small shared helper."""
    core = REPO / "core"
    top = sorted(p.name for p in core.iterdir()
                 if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists()))
    assert "sampling" in top and "map" in top  # the walk sees the packages
    assert len(top) <= 12, f"core has {len(top)} top-level modules: {top}"


def test_the_root_holds_only_the_packs_face():
    """Code lives in packages (core, nodes, cli, training); the root has the files ComfyUI and pip look for."""
    import subprocess as sp

    tracked = sp.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    top = {p for p in tracked if "/" not in p}
    allowed = {"__init__.py", "__main__.py", "pyproject.toml", "requirements.txt", "README.md", "LICENSE", "Makefile",
               ".gitignore", ".comfyignore", "CHANGELOG.md"}
    assert top <= allowed, f"move these into a package folder: {sorted(top - allowed)}"
