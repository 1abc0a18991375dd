"""The pack as a ComfyUI V3 extension, built from the plain node classes.

The node API is imported from a *versioned* module (:data:`API_VERSIONS`, ``comfy_api.v0_0_2``,
which 0.3.64 and 0.8.0 both ship), so a later ComfyUI whose ``latest`` moves on cannot silently change
the nodes; ``latest`` is the fallback, with a log line, when no pinned version is present.

Only ComfyUI calls this (through the root's ``comfy_entrypoint``), so ``comfy_api``
is imported inside the functions: the pack and its tests load without ComfyUI.
The nodes keep V1's defaults for what V3 makes optional: no ``fingerprint_inputs``
(they had no IS_CHANGED) and no ``validate_inputs`` (no VALIDATE_INPUTS; defining
one would also switch off ComfyUI's own range checks of the inputs it names).
Combo values are checked against their options before a node runs, which V1
combos got from ComfyUI and V3 combos get only from 0.8.0's validation.
"""
from __future__ import annotations

import logging

from . import NODES

log = logging.getLogger("iqa_map")
#: Versioned node APIs to try, newest pinned first; ``latest`` only as the fallback.
API_VERSIONS = ("comfy_api.v0_0_2", "comfy_api.latest")


def api():
    """(module name, ``io``, ``ComfyExtension``) of the first importable API in :data:`API_VERSIONS`."""
    import importlib

    for name in API_VERSIONS:
        try:
            mod = importlib.import_module(name)
            io, ext = mod.io, mod.ComfyExtension
        except (ImportError, AttributeError):
            continue
        if name.endswith(".latest"):
            log.warning("IQA-MAP: no pinned comfy_api version (%s) found; using comfy_api.latest",
                        ", ".join(API_VERSIONS[:-1]))
        return name, io, ext
    raise ImportError(f"ComfyUI's V3 node API is not importable (tried {', '.join(API_VERSIONS)}); "
                      "IQA-MAP needs ComfyUI 0.3.64 or later")


def build(plain):
    """An ``io.ComfyNode`` named like ``plain``: its schema from ``plain.SCHEMA``, its run ``plain.execute``."""
    _, io, _ = api()

    from .schema import check_choices, to_v3

    def define_schema(cls):
        return to_v3(plain.SCHEMA)  # rendered on every call: combo lists follow files and installs

    def execute(cls, **inputs):
        check_choices(plain.SCHEMA, inputs)
        result = plain.execute(**inputs)
        if isinstance(result, dict):  # {"ui": ..., "result": ...}: execution.py passes a dict ui on unchanged
            return io.NodeOutput(*result["result"], ui=result.get("ui"))
        return io.NodeOutput(*result)

    return type(plain.__name__, (io.ComfyNode,), {
        "__module__": plain.__module__, "__doc__": plain.__doc__, "PLAIN": plain,
        "define_schema": classmethod(define_schema), "execute": classmethod(execute)})


async def comfy_entrypoint():
    """What ComfyUI's ``load_custom_node`` awaits when the pack has no NODE_CLASS_MAPPINGS."""
    version, _, ComfyExtension = api()

    class IQAMapExtension(ComfyExtension):
        async def get_node_list(self):
            nodes = [build(cls) for cls in NODES.values()]
            log.info("IQA-MAP: %d nodes through ComfyUI's V3 node API (%s)", len(nodes), version)
            return nodes

    return IQAMapExtension()
