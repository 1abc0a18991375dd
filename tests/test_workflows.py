"""The shipped workflows: valid UI-format graphs of existing node types, consistent links, documented."""
import importlib.util
import json

import pytest
from helpers import REPO

from iqa_map.nodes import NODES

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
#: Core ComfyUI nodes the workflows may use (the integration tests check them against a real /object_info).
CORE_NODES = {"CheckpointLoaderSimple", "CLIPTextEncode", "LoadImage", "ImageScale", "ImageScaleBy", "VAEEncode",
              "VAEDecode", "SaveImage", "PreviewImage", "UpscaleModelLoader", "ImageUpscaleWithModel", "KSampler",
              "DifferentialDiffusion", "SetLatentNoiseMask", "UNETLoader", "DualCLIPLoader", "VAELoader",
              "FluxGuidance"}


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
        assert n["type"] in NODES or n["type"] in CORE_NODES, f"unknown node type {n['type']}"
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
        if n["type"] not in NODES:
            continue
        # Against the node's schema, the one source of its V3 schema and its V1 INPUT_TYPES.
        inputs = NODES[n["type"]].SCHEMA.ordered_inputs()
        sockets = {i.id: i for i in inputs if not i.is_widget}
        widgets = [i for i in inputs if i.is_widget]
        for inp in n["inputs"]:
            assert inp["name"] in sockets and sockets[inp["name"]].type == inp["type"], f"{n['type']}.{inp['name']}"
        for name, i in sockets.items():
            if not i.optional:
                assert any(x["name"] == name and x["link"] is not None for x in n["inputs"]), \
                    f"{path.name}: {n['type']}.{name} is not connected"
        # Widget values by position; a seed widget carries its 'control after generate' value next to it.
        assert len(n["widgets_values"]) == len(widgets) + sum(i.id == "seed" for i in widgets), \
            f"{path.name}: {n['type']} widget count"
        values = iter(n["widgets_values"])
        for i in widgets:
            value, where = next(values), f"{path.name}: {n['type']}.{i.id}"
            if i.id == "seed":
                assert next(values) in ("fixed", "increment", "decrement", "randomize"), where
            if i.type == "COMBO":
                assert value in i.choices(), f"{where} = {value!r}"
            elif i.type in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert (i.min is None or value >= i.min) and (i.max is None or value <= i.max), f"{where} = {value}"
            else:
                assert isinstance(value, str if i.type == "STRING" else bool), where
    assert path.with_suffix(".jpg").is_file(), "every workflow has its thumbnail (tools/make_thumbnails.py)"
    assert path.name in (REPO / "README.md").read_text(), "every workflow is described in the README"


def test_workflows_match_their_generator():
    """The JSON files are what tools/make_workflows.py writes from the current node schemas."""
    gen = _generator()
    for name, build in gen.WORKFLOWS.items():
        shipped = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
        assert build().ui() == shipped, f"{name}.json is stale: run python tools/make_workflows.py"


def test_a_workflow_saved_before_the_newer_inputs_runs_with_their_defaults():
    """Inputs added later sit after every older widget: a graph saved before them (fewer widget values) keeps its
    values, and the missing ones fall back to the library's defaults."""
    from comfy_harness import ui_to_api

    from iqa_map.core.map.settings import ASCENT
    from iqa_map.nodes.settings_inputs import settings_from_inputs

    info = {k: {"input": cls.INPUT_TYPES()} for k, cls in NODES.items()}
    ui = json.loads((REPO / "example_workflows" / "iqa_map_cpu_builtin.json").read_text())
    ui["nodes"] = [n for n in ui["nodes"] if n["type"] in NODES]  # (widget values are all this reads)
    node = next(n for n in ui["nodes"] if n["type"] == ASCENT)
    node["widgets_values"][2] = 5  # iterations, set by the user
    full = ui_to_api(ui, info)[str(node["id"])]["inputs"]
    older = [n for n in NODES[ASCENT].SCHEMA.ordered_inputs() if n.is_widget]
    newest = older.index(next(i for i in older if i.id == "lr_schedule"))  # the first input added in 0.2.0
    node["widgets_values"] = node["widgets_values"][:newest + 1]  # + 1: the seed's control value
    old = ui_to_api(ui, info)[str(node["id"])]["inputs"]
    widgets = {i.id for i in older}
    assert set(full) - set(old) == {i.id for i in older[newest:]}
    pick = lambda inputs: {k: v for k, v in inputs.items() if k in widgets}  # noqa: E731
    assert settings_from_inputs(ASCENT, pick(old)) == settings_from_inputs(ASCENT, pick(full))
    assert settings_from_inputs(ASCENT, pick(old)).iterations == 5
