"""The shipped workflows: valid UI-format graphs of existing node types, consistent links, documented."""
import importlib.util
import json

import pytest
from helpers import REPO

from iqa_map import NODE_CLASS_MAPPINGS

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
#: Core ComfyUI nodes the workflows may use (the integration tests check them against a real /object_info).
CORE_NODES = {"CheckpointLoaderSimple", "CLIPTextEncode", "LoadImage", "ImageScale", "ImageScaleBy", "VAEEncode",
              "VAEDecode", "SaveImage", "PreviewImage", "UpscaleModelLoader", "ImageUpscaleWithModel", "KSampler",
              "DifferentialDiffusion", "SetLatentNoiseMask"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _generator():
    spec = importlib.util.spec_from_file_location("make_workflows", REPO / "tools" / "make_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_five_workflows_are_shipped():
    names = {p.stem for p in WORKFLOWS}
    assert {"iqa_map_cpu_builtin", "iqa_map_sd15_basic", "iqa_map_sd15_compare_priors",
            "iqa_map_sd15_fused_prior", "iqa_map_sd15_after_upscaler"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_consistent(path):
    ui = json.loads(path.read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] >= max(nodes)
    for n in nodes.values():
        assert n["type"] in NODE_CLASS_MAPPINGS or n["type"] in CORE_NODES, f"unknown node type {n['type']}"
    link_ids = [lk[0] for lk in ui["links"]]
    assert len(set(link_ids)) == len(link_ids) and ui["last_link_id"] >= max(link_ids)
    for lid, src, src_slot, dst, dst_slot, typ in ui["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert lid in out["links"] and inp["link"] == lid
        assert out["type"] == typ == inp["type"]
    # Every link a node lists exists, and every input of ours that is required is connected.
    listed = {lid for n in nodes.values() for o in n["outputs"] for lid in o["links"]}
    assert listed == set(link_ids)
    for n in nodes.values():
        if n["type"] not in NODE_CLASS_MAPPINGS:
            continue
        spec = NODE_CLASS_MAPPINGS[n["type"]].INPUT_TYPES()
        sockets = {name: s[0] for sec in spec.values() for name, s in sec.items()
                   if not isinstance(s[0], list) and s[0] not in WIDGET_TYPES}
        widgets = [name for sec in spec.values() for name, s in sec.items()
                   if isinstance(s[0], list) or s[0] in WIDGET_TYPES]
        for inp in n["inputs"]:
            assert sockets.get(inp["name"]) == inp["type"], f"{n['type']}.{inp['name']}"
        for name, kind in sockets.items():
            if name in spec["required"]:
                assert any(i["name"] == name and i["link"] is not None for i in n["inputs"]), \
                    f"{path.name}: {n['type']}.{name} is not connected"
        assert len(n["widgets_values"]) == len(widgets) + ("seed" in widgets)
        for name, value in zip([w for w in widgets for _ in range(1 + (w == "seed"))], n["widgets_values"]):
            choices = next(sec[name][0] for sec in spec.values() if name in sec)
            if isinstance(choices, list) and value != "fixed":
                assert value in choices, f"{path.name}: {n['type']}.{name} = {value!r}"
    assert (path.with_suffix(".png")).is_file(), "every workflow has a thumbnail"
    assert path.name in (REPO / "README.md").read_text(), "every workflow is described in the README"


def test_workflows_match_their_generator():
    """The JSON files are what tools/make_workflows.py writes from the current node definitions."""
    gen = _generator()
    for name, build in gen.WORKFLOWS.items():
        shipped = json.loads((REPO / "workflows" / f"{name}.json").read_text())
        assert build().ui() == shipped, f"{name}.json is stale: run python tools/make_workflows.py"
