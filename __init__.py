"""IQA-MAP: NR-IQA models as natural-image priors for MAP enhancement in diffusion latents.

ComfyUI loads this folder as a custom-node pack (under whatever folder name it
was cloned to); ``pip install -e .`` exposes the same folder as the library
``iqa_map``. Nothing here imports ComfyUI: the node modules import it lazily,
so ``import iqa_map.core`` works in any Python.
"""
if __package__:
    from .nodes import DISPLAY_NAMES as NODE_DISPLAY_NAME_MAPPINGS
    from .nodes import NODES as NODE_CLASS_MAPPINGS
else:
    # Imported as a bare file, not as a package: pytest does this to the repository
    # root when the checkout's folder name is not an identifier. There is no pack
    # to register then (ComfyUI and `import iqa_map` always import it as a package).
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__version__ = "0.1.0"
#: Front-end extension: shows IQA Score results on the node.
WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
