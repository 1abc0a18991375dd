"""IQA-MAP: NR-IQA models as natural-image priors for MAP enhancement in diffusion latents.

ComfyUI loads this folder as a custom-node pack (under whatever folder name it
was cloned to) through ``comfy_entrypoint``, its V3 node API; there is
deliberately no ``NODE_CLASS_MAPPINGS`` here, which would make ComfyUI take the
V1 path instead. ``pip install -e .`` exposes the same folder as the library
``iqa_map`` (the plain node classes: ``iqa_map.nodes.NODES``). Nothing here
imports ComfyUI: the node modules import it lazily, so ``import iqa_map.core``
works in any Python.
"""
if __package__:
    from .nodes.v3 import comfy_entrypoint
# else: imported as a bare file, not as a package: pytest does this to the repository root when the
# checkout's folder name is not an identifier. There is no pack to register then (ComfyUI and
# `import iqa_map` always import it as a package).



def _version() -> str:
    """The version declared once, in pyproject.toml (beside this file in a checkout or ComfyUI's custom_nodes),
    else the installed distribution's."""
    import pathlib
    import re

    try:
        text = (pathlib.Path(__file__).with_name("pyproject.toml")).read_text(encoding="utf-8")
        return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    except (OSError, AttributeError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("iqa-map")
        except PackageNotFoundError:
            return "unknown"


__version__ = _version()

#: The library's one-call entry points, imported on first use (ComfyUI's import of the pack stays light).
_LAZY = {"enhance": "map.pipeline", "load_model": "map.pipeline", "load_prior": "map.pipeline", "MapSettings": "map.settings",
         "TileSettings": "map.settings", "preset": "map.settings"}


def __getattr__(name):
    if name in _LAZY and __package__:
        import importlib

        return getattr(importlib.import_module(f".core.{_LAZY[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Front-end extension: shows IQA Score results on the node (ComfyUI serves it for V3 packs too).
WEB_DIRECTORY = "./web"
__all__ = ["comfy_entrypoint", "WEB_DIRECTORY", "__version__", *_LAZY]
