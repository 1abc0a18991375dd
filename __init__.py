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

__version__ = "0.1.0"
#: Front-end extension: shows IQA Score results on the node (ComfyUI serves it for V3 packs too).
WEB_DIRECTORY = "./web"
__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
