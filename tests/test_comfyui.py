"""Inside a real ComfyUI (``COMFYUI_PATH``; skipped with the reason printed otherwise).

    COMFYUI_PATH=~/ComfyUI COMFYUI_PYTHON=~/ComfyUI/venv/bin/python pytest -m comfyui -rs

Starts ComfyUI headless with ``--cpu`` and this pack in ``custom_nodes``, with
random-weight models (an SD 1.5-architecture checkpoint, a spandrel upscaler and
denoiser) that the tests build into a temporary models folder.
"""
import json
import math
import re
import time
import urllib.request

import pytest
from comfy_harness import REPO, ComfyServer, build_models, comfyui_path, run_script, small, ui_to_api, uses_flow_models

from iqa_map.nodes import NODES
from iqa_map.nodes.schema import legacy_input_types

pytestmark = pytest.mark.comfyui
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfyui_path()
    srv = ComfyServer(tmp_path_factory.mktemp("comfy"))
    yield srv
    srv.stop()


def _as_legacy(spec) -> list:
    """An /object_info input of a V3 node (a combo is "COMBO" with "options") in the V1 form (the bare list)."""
    kind, opts = spec[0], dict(spec[1]) if len(spec) > 1 else {}
    if kind == "COMBO":
        kind = opts.pop("options")
        opts.pop("multiselect", None)
    return [kind, opts]


def test_pack_loads_and_lists_every_node(server):
    log = server.text()
    ours = [ln for ln in log.splitlines() if "ComfyUI-IQA-MAP" in ln]
    # ComfyUI lists every custom-node folder with its import time, '(IMPORT FAILED)' when it broke.
    assert ours and not any("IMPORT FAILED" in ln or "Cannot import" in ln for ln in ours), log[-3000:]
    # Through the V3 entry point (no NODE_CLASS_MAPPINGS at the root), and it did not fail.
    assert f"IQA-MAP: {len(NODES)} nodes through ComfyUI's V3 node API" in log, log[-3000:]
    assert "Error while calling comfy_entrypoint" not in log, log[-3000:]
    info = server.get("/object_info")
    for key, cls in NODES.items():
        assert key in info, f"{key} missing from /object_info"
        node, schema, legacy = info[key], cls.SCHEMA, legacy_input_types(cls.SCHEMA)
        # What the schema says, in V1's rendering: names and order, types, choices, defaults, ranges, tooltips.
        for section in ("required", "optional"):
            assert list(node["input"].get(section, {})) == list(legacy.get(section, {})), f"{key} {section}"
            for name, (kind, opts) in legacy.get(section, {}).items():
                got = _as_legacy(node["input"][section][name])
                if callable(schema.input(name).options):  # files, installs, schedulers: this ComfyUI's own list
                    assert opts["default"] in got[0] and got[1] == opts, f"{key}.{name}"
                else:
                    assert got == [list(kind) if isinstance(kind, list) else kind, opts], f"{key}.{name}"
        assert node["output"] == list(cls.RETURN_TYPES) and node["output_name"] == list(cls.RETURN_NAMES)
        assert (node["display_name"], node["description"], node["category"], node["output_node"]) == (
            schema.display_name, schema.description, "IQA-MAP", schema.is_output_node)
        # V3's marks: combos as "COMBO" (V1 sends the bare list), V3's fixed info fields, output nodes' hidden inputs
        combos = [node["input"]["optional" if i.optional else "required"][i.id][0] for i in schema.inputs
                  if i.type == "COMBO"]
        assert all(c == "COMBO" for c in combos), f"{key}: combos not rendered by V3"
        assert {"deprecated", "experimental", "api_node"} <= set(node), key
        if schema.is_output_node:
            assert node["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}, key
    # The core nodes the shipped workflows use exist in this ComfyUI.
    for path in WORKFLOWS:
        for node in json.loads(path.read_text())["nodes"]:
            assert node["type"] in info, f"{path.name}: {node['type']} is not a node of this ComfyUI"


def test_the_template_browser_lists_every_example_workflow(server):
    """Workflow -> Browse Templates: ComfyUI lists a pack's example_workflows/ and serves each with its thumbnail."""
    listed = server.get("/api/workflow_templates")
    assert sorted(listed.get("ComfyUI-IQA-MAP", [])) == sorted(p.stem for p in WORKFLOWS)
    for path in WORKFLOWS:
        for suffix in (".json", ".jpg"):
            url = f"{server.url}/api/workflow_templates/ComfyUI-IQA-MAP/{path.stem}{suffix}"
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.read() == path.with_suffix(suffix).read_bytes()


def _run(server, prompt: dict, timeout=900) -> dict:
    pid = server.queue(prompt)
    entry = server.wait(pid, timeout)
    status = entry["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-3000:] + server.text()[-3000:]
    return entry


#: Workflows as the previous release (0.3.0) saved them, before inputs were appended to DDIM Invert and Latent MAP
#: Ascent: they must still load and run (new inputs take their defaults).
SAVED = sorted((REPO / "tests" / "saved_workflows").glob("*.json"))


@pytest.mark.parametrize("path", WORKFLOWS + SAVED, ids=lambda p: p.stem)
def test_shipped_workflow_runs(server, path):
    prompt = ui_to_api(json.loads(path.read_text()), server.get("/object_info"))
    if "cpu" not in path.stem:
        if uses_flow_models(prompt) and not (server.base / "models" / "vae" / "tiny_flux_ae.safetensors").is_file():
            build_models(server.base / "models", "build_flow_models.py")  # ~1.5 GB: only when a workflow needs it
        prompt = small(prompt)  # the CPU workflow runs as shipped
    entry = _run(server, prompt)
    saved = [img for out in entry["outputs"].values() for img in out.get("images", [])]
    n_save = sum(1 for n in prompt.values() if n["class_type"] == "SaveImage")
    assert len(saved) == n_save and n_save >= 1
    for img in saved:
        assert (server.base / "output" / img.get("subfolder", "") / img["filename"]).stat().st_size > 0
    scores = [t for nid, out in entry["outputs"].items() for t in out.get("text", [])
              if prompt[nid]["class_type"] == "IQAMAP_IQAScore"]
    assert scores and all("/100" in t or "better" in t for t in scores)


def test_interrupt_stops_the_ascent_within_one_iteration(server):
    ui = json.loads((REPO / "example_workflows" / "iqa_map_cpu_builtin.json").read_text())
    prompt = ui_to_api(ui, server.get("/object_info"))
    for node in prompt.values():
        if node["class_type"] == "IQAMAP_LatentMAPAscent":
            node["inputs"].update(iterations=500, seed=12345)  # a new input: nothing cached
        if node["class_type"] == "ImageScale":
            node["inputs"].update(width=96, height=96)
    pattern = re.compile(r"IQA-MAP ascent: iteration (\d+)/500")
    pid = server.queue(prompt)
    t0 = time.time()
    while not [int(m) for m in pattern.findall(server.text())] or max(map(int, pattern.findall(server.text()))) < 2:
        assert time.time() - t0 < 600, server.text()[-3000:]
        time.sleep(0.2)
    server.post("/interrupt")
    at_interrupt = max(map(int, pattern.findall(server.text())))
    entry = server.wait(pid, 300)
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    last = max(map(int, pattern.findall(server.text())))
    assert last <= at_interrupt + 1, f"interrupted at iteration {at_interrupt}, went on to {last}"


def test_bad_input_errors_are_ours_inside_comfyui(server):
    """A bad input inside ComfyUI: the execution_error it reports (/history) carries our message, which says
    what to do, raised by the pack's own code, not the last line of a torch or pyiqa traceback (README, Bad input)."""
    from iqa_map.core.priors.weights import _host_reachable

    ui = json.loads((REPO / "example_workflows" / "iqa_map_cpu_builtin.json").read_text())
    info = server.get("/object_info")

    def prompt(size, **prior_names):
        p = ui_to_api(ui, info)
        for node in p.values():
            if node["class_type"] == "ImageScale":
                node["inputs"].update(width=size[0], height=size[1])
            elif node["class_type"] == "IQAMAP_LatentMAPAscent":
                node["inputs"].update(iterations=1)
            elif node["class_type"] == "IQAMAP_DDIMInvert":
                node["inputs"].update(steps=2)
            elif node["class_type"] == "IQAMAP_LoadIQAPrior" and prior_names:
                node["inputs"].update(**prior_names)
        return p

    def error_of(p):
        entry = server.wait(server.queue(p), 300)
        assert entry["status"]["status_str"] == "error", entry["status"]
        errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
        assert len(errors) == 1, entry["status"]["messages"]
        err = errors[0]
        last = err["traceback"][-1]
        assert "ComfyUI-IQA-MAP" in last and "site-packages" not in last, err["traceback"]
        return err

    err = error_of(prompt((12, 8)))  # an IMAGE below 16 px into the ascent
    assert err["node_type"] == "IQAMAP_LatentMAPAscent" and err["exception_type"] == "ValueError", err
    assert err["exception_message"].strip() == ("the image is 12x8 pixels; Latent MAP Ascent needs at least 16x16: "
                                                "scale it up first (e.g. Upscale Image) or use a larger photo")
    assert "nodes/map_nodes.py" in err["traceback"][-1]

    if "musiq" not in _as_legacy(info["IQAMAP_LoadIQAPrior"]["input"]["required"]["name"])[0]:
        pytest.skip("ComfyUI's Python has no pyiqa: the missing-weights case cannot be queued")
    if _host_reachable("https://huggingface.co", 3.0):
        pytest.skip("huggingface.co is reachable: Load IQA Prior would download MUSIQ's weights, not report them "
                    "missing")
    t0 = time.time()
    err = error_of(prompt((64, 64), name="musiq"))  # pyiqa weights not in models/iqa, offline
    assert time.time() - t0 < 120, "a missing weights file must fail fast, never wait on the network"
    assert err["node_type"] == "IQAMAP_LoadIQAPrior" and err["exception_type"].endswith("WeightsMissingError"), err
    msg = err["exception_message"]
    assert "weights file 'musiq_koniq_ckpt" in msg and "Download it from https://" in msg, msg
    assert f"put it into {(server.base / 'models' / 'iqa').resolve()}" in msg, msg


def test_a_combo_value_outside_its_options_never_reaches_the_node(server):
    """ComfyUI refuses it when the prompt is queued (V1 combos, and V3 ones from 0.8.0); 0.3.64 passes V3 combo
    values on unchecked, and the pack's V3 wrapper refuses it before the node runs."""
    p = ui_to_api(json.loads((REPO / "example_workflows" / "iqa_map_cpu_builtin.json").read_text()), server.get("/object_info"))
    for node in p.values():
        if node["class_type"] == "IQAMAP_LoadIQAPrior":
            node["inputs"]["device"] = "tpu"
    try:
        pid = server.queue(p)
    except AssertionError as e:  # POST /prompt -> 400 with ComfyUI's own validation
        assert "value_not_in_list" in str(e) and "tpu" in str(e), e
        return
    entry = server.wait(pid, 300)
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert len(errors) == 1 and errors[0]["node_type"] == "IQAMAP_LoadIQAPrior", entry["status"]["messages"]
    assert "device 'tpu' is not one of: auto, cpu, gpu" in errors[0]["exception_message"], errors[0]


def _in_process(tmp_path, script: str) -> dict:
    """Build the tiny models, run ``script`` with ComfyUI's Python on them and ComfyUI's example image; its
    RESULT line."""
    run_models = tmp_path / "models"
    out = run_script("build_tiny_models.py", run_models)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_script(script, run_models, comfyui_path() / "input" / "example.png")
    assert out.returncode == 0, out.stderr[-5000:]
    return json.loads(out.stdout.split("RESULT ", 1)[1])


def test_adapter_inside_comfyui(tmp_path):
    """ComfyUI's own loaders and encoders, then the pack's nodes, under inference mode (in-process)."""
    r = _in_process(tmp_path, "check_adapter.py")
    assert r["model_config"] == "SD15"
    assert r["reconstruction_rel_error"] < 1e-4 and r["inversion_error"] < 1e-4  # EDICT through ComfyUI's sampler
    assert r["ddim_inversion_error"] > 100 * r["inversion_error"]
    assert r["vpred_inversion_error"] < 1e-4  # v-prediction through ComfyUI's model_sampling
    # LCM, 4 steps: exact inversion and a finite ascent. The objective falls at the default step here (the node keeps
    # iteration 0, the photo), and at every rate from 0.01 to 2 on this tiny random UNet (docs/models_comfyui.md,
    # Few-step preset).
    assert r["lcm_inversion_error"] < 1e-4 and all(math.isfinite(v) for v in r["lcm_objectives"])
    assert len(r["scores"]) == 3 and all(s == s for s in r["scores"])  # 2 iterations, finite scores
    assert r["latent_shape"] == [1, 4, 8, 8] and r["image_shape"] == [1, 64, 64, 3]
    assert r["decode_max_diff"] < 1e-5  # Decode == ComfyUI's VAEDecode
    # SDXL through ComfyUI's SDXL model class: exact inversion, finite scores, and its pooled conditioning used
    assert r["sdxl_model"] == "SDXL" and r["sdxl_inversion_error"] < 1e-4
    assert len(r["sdxl_scores"]) == 3 and all(s == s for s in r["sdxl_scores"])
    assert r["sdxl_latent_shape"] == [1, 4, 8, 8] and r["sdxl_pooled_changes_inversion"] > 1e-3
    assert "WAN21 is a video model" in r["video_error"] and "Flux.1" in r["video_error"] and "SD1.x" in r["video_error"]
    assert "COSMOS_RFLOW" in r["cosmos_error"] and "Supported:" in r["cosmos_error"]
    assert "holds 3 frames" in r["frames_error"]
    assert r["dncnn_inversion_error"] < 1e-4 and r["dncnn_image_shape"] == [1, 64, 64, 3]


def test_single_file_checkpoint_loads_offline_with_model_config(tmp_path):
    """--model <single file> --model-config <configs only>: the same network as the diffusers folder.

    The single file is written with ComfyUI's key maps, a second implementation
    of the LDM layout, so this checks diffusers' single-file loader through ours.
    """
    import shutil

    import torch
    from PIL import Image
    from tiny_models import save_tiny_sd_pipeline

    from iqa_map.cli import main
    from iqa_map.core.models.loading import load_model

    pipe = save_tiny_sd_pipeline(tmp_path / "sd")
    out = run_script("to_single_file.py", pipe, tmp_path / "tiny.safetensors")
    assert out.returncode == 0, out.stderr[-3000:]
    configs = tmp_path / "configs"  # configs and tokenizer, no weights: what a user downloads once
    shutil.copytree(pipe, configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    a = load_model(str(pipe), device="cpu")
    b = load_model(str(tmp_path / "tiny.safetensors"), device="cpu", config=str(configs))
    for ma, mb in ((a.denoiser.unet, b.denoiser.unet), (a.codec.vae, b.codec.vae)):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].reshape(sa[k].shape)) for k in sa)
    assert torch.equal(a.cond, b.cond)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(a.denoiser(x, torch.tensor([3.0]), a.cond), b.denoiser(x, torch.tensor([3.0]), b.cond),
                              atol=1e-5)
    img = tmp_path / "p.png"
    Image.open(comfyui_path() / "input" / "example.png").convert("RGB").crop((0, 0, 64, 48)).save(img)
    assert main(["enhance", str(img), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "tiny.safetensors"),
                 "--model-config", str(configs), "--prior", "brisque", "--steps", "2", "--iterations", "1",
                 "--fidelity", "mse", "--device", "cpu", "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "out" / "p_enhanced.png").is_file() and report["inversion_error"] < 1e-2


def test_regional_prompt_entries_reach_the_model(tmp_path):
    """IQA Regional Prompt with the tiny SD 1.5 checkpoint's real CLIP: ComfyUI's sampler applies each region's
    prompt with that region's mask (at latent size) and the global prompt everywhere."""
    r = _in_process(tmp_path, "check_regional.py")
    assert r["entries"] == 1 + len(r["regions"]) and len(r["regions"]) == 2
    assert [g["pool"] for g in r["regions"]] == ["low", "high"]
    assert r["global_everywhere"] and r["prompts_differ"] and r["strength_right_gt_left"]
    for c in r["region_checks"]:
        assert c["applied"] and c["mask_error"] < 1e-3, r["region_checks"]
    assert r["sampled_shape"] == [1, 4, 8, 8]


def test_regional_prompt_bad_inputs_inside_comfyui(server):
    """Empty pools, C_min > C_max, a quality map of another size: the node's own message, not a traceback's."""
    ui = json.loads((REPO / "example_workflows" / "iqa_map_sd15_regional_img2img.json").read_text())
    info = server.get("/object_info")
    load = next(n["id"] for n in ui["nodes"] if n["type"] == "LoadImage")
    for change, message in (({"low_pool": "  \n "}, "need at least one phrase"),
                            ({"c_min": 5, "c_max": 2}, "c_min (5) must not exceed c_max (2)"),
                            # Load Image's MASK (64x64 for a photo without alpha) beside an 80x80 IMAGE
                            ({"quality_map": [str(load), 1]}, "give the map of this image")):
        p = small(ui_to_api(ui, info))
        for node in p.values():
            if node["class_type"] == "ImageScale":
                node["inputs"].update(width=80, height=80)
            if node["class_type"] == "IQAMAP_IQARegionalPrompt":
                node["inputs"].update(change)
        entry = server.wait(server.queue(p), 300)
        errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
        assert len(errors) == 1, entry["status"]["messages"]
        err = errors[0]
        assert err["node_type"] == "IQAMAP_IQARegionalPrompt" and message in err["exception_message"], err
        # raised by the node itself or by the pack's settings check it calls (nodes/settings_inputs.py)
        assert any(f in err["traceback"][-1] for f in ("nodes/regional_nodes.py", "nodes/settings_inputs.py")), \
            err["traceback"]


#: The flow-matching families, each a tiny random-weight network of ComfyUI's own model class (check_flow.py).
FLOW_FAMILIES = {"flux_dev": "Flux", "flux_schnell": "Flux", "sd3": "SD3", "sd3_file": "SD3", "flux2": "Flux2",
                 "chroma": "Chroma", "chroma_radiance": "ChromaRadiance", "qwen_image": "QwenImage",
                 "lumina2": "Lumina2", "z_image": "Lumina2", "auraflow": "AuraFlow", "hidream": "HiDream",
                 "hunyuan_image": "HunyuanImage21", "hunyuan_image_vae32": "HunyuanImage21", "flux_kontext": "Flux",
                 "qwen_image_edit": "QwenImage"}

#: Families whose conditioning carries an entry that must reach the network (tests/comfy_scripts/flow_families.py):
#: the edit models' reference latent (ComfyUI's ReferenceLatent), HunyuanImage 2.1's ByT5 glyph features.
PROBED_ENTRIES = {"flux_kontext": "reference_latents", "qwen_image_edit": "reference_latents",
                  "hunyuan_image": "conditioning_byt5small", "hunyuan_image_vae32": "conditioning_byt5small"}


#: Tiny random networks whose gradient is large enough that the default step overshoots: the prior rises but the
#: fidelity term falls more, so the objective falls and the node keeps iteration 0 (its best iterate).
# Tiny random models on which 2 iterations at the default step raise the prior but not the objective (the step
# overshoots; measured: AuraFlow always, Flux schnell and Chroma with this release's own metrics, whose float order
# differs from pyiqa's). The few-step preset's test covers the smaller step.
OVERSHOOTS = {"auraflow", "flux_schnell", "chroma"}


def _flow(*families) -> dict:
    out = run_script("check_flow.py", comfyui_path() / "input" / "example.png", *families, timeout=900)
    assert out.returncode == 0, out.stderr[-5000:]
    return json.loads(out.stdout.split("RESULT ", 1)[1])


@pytest.mark.parametrize("family", FLOW_FAMILIES)
def test_flow_matching_family_through_the_nodes(family):
    """DDIM Invert -> Latent MAP Ascent -> Decode on a flow-matching MODEL, under inference mode as in ComfyUI:
    LATENT in -> LATENT out exact at 0 iterations (the (1 - sigma) scaling at the sampler's boundaries), the
    reversible gradient equal to plain autograd's (fused RoPE and in-place blocks made differentiable), the ascent
    raising the prior, and ComfyUI left as it was (a KSampler run bit-identical before and after, RoPE restored)."""
    r = _flow(family)[family]
    assert r["model_class"] == FLOW_FAMILIES[family]
    assert r["sample_back_rel_error"] < 1e-4 and r["zero_iterations_rel_error"] < 1e-4, r
    assert r["inversion_error"] < 1e-4, r
    assert r["grad_rel_diff"] < 1e-5 and r["grad_norm"] > 0, r
    assert all(math.isfinite(v) for v in r["objectives"]) and not r["events"], r
    assert max(r["scores"][1:]) > r["scores"][0], r  # the prior rises
    if family not in OVERSHOOTS:
        assert max(r["objectives"][1:]) > r["objectives"][0], r
    assert r["out_latent_shape"] == r["latent_shape"] and r["image_shape"] == [1, 64, 64, 3] and r["image_finite"]
    assert r["ksampler_bit_identical"] and r["rope_restored"], r
    if family == "sd3_file":  # loaded from a file: ComfyUI's detection found SD3 from the keys
        assert r["config"] == "SD3", r
    if family == "qwen_image":
        assert r["latent_shape"] == [1, 16, 1, 8, 8]  # a video VAE's 5-D image latent
    if family == "flux2":
        assert r["latent_shape"] == [1, 128, 4, 4]
    if family == "hunyuan_image":
        assert r["latent_shape"] == [1, 64, 8, 8]  # 64 channels
    if family == "hunyuan_image_vae32":  # its own VAE class through comfy.sd.VAE's detection: 32x
        assert r["latent_shape"] == [1, 64, 2, 2]
    if family in PROBED_ENTRIES:  # without the entry, the same KSampler run (seed, latent) gives another result
        assert r[f"without_{PROBED_ENTRIES[family]}_rel_change"] > 1e-3, r


def test_flow_family_that_cannot_run_gets_the_nodes_message():
    """HunyuanImage 2.1's refiner (ComfyUI's own class): DDIM Invert says what it is and what to connect instead."""
    r = _flow("refuse:hunyuan_image_refiner")["refuse:hunyuan_image_refiner"]
    assert r["model_class"] == "HunyuanImage21Refiner" and r["error"], r
    assert "HunyuanImage 2.1's refiner" in r["error"] and "base model" in r["error"] and "Supported:" in r["error"], r


@pytest.mark.parametrize("family", ["flux_dev", "qwen_image"])
def test_flow_batch_of_two_photos_through_the_nodes(family):
    """Two different photos as one LATENT batch through DDIM Invert -> Latent MAP Ascent -> Decode: each item comes
    back from 0 iterations as it went in, and the prior of each item's decoded image rises over 2 iterations."""
    r = _flow(f"batch:{family}")[f"batch:{family}"]
    assert r["latent_shape"][0] == 2 and r["out_latent_shape"] == r["latent_shape"] and r["items_differ"] > 0.1, r
    assert all(e < 1e-4 for e in r["zero_iterations_rel_error"]), r
    assert all(a > b for a, b in zip(r["scores_after"], r["scores_before"])), r  # the prior rises per item
    assert r["image_shape"] == [2, 64, 64, 3] and not r["events"], r


#: One per model class and latent layout (the other FLOW_FAMILIES reuse these networks with other inputs).
MEMORY_FAMILIES = ["flux_dev", "sd3", "flux2", "chroma", "chroma_radiance", "qwen_image", "lumina2", "z_image",
                   "auraflow", "hidream", "hunyuan_image"]


@pytest.fixture(scope="module")
def flow_memory() -> dict:
    return _flow(*(f"memory:{f}" for f in MEMORY_FAMILIES))  # one process, about 30 s a family on one core


@pytest.mark.parametrize("family", MEMORY_FAMILIES)
def test_flow_gradient_memory_does_not_grow_with_steps(flow_memory, family):
    """Peak bytes held for the backward of one gradient (every saved activation, counted in the copy-on-write
    hook): the same at 5 and 50 EDICT steps on the reversible path, 10x on plain autograd (the probe can fail)."""
    r = flow_memory[f"memory:{family}"]
    assert r["reversible_50"] == r["reversible_5"] > 0, r
    assert r["autograd_50"] > 5 * r["autograd_5"], r


def test_few_step_preset_climbs_where_the_default_step_overshoots():
    """The tiny AuraFlow at 4 steps: the default momentum step (lr 2) makes the objective fall (the node keeps
    iteration 0); the few-step preset's learning rate (core.map.settings.FEW_STEP) makes it rise."""
    r = _flow("fewstep:auraflow")["fewstep:auraflow"]
    assert max(r["default"][1:]) < r["default"][0], r  # the overshoot the preset is for (the probe can fail)
    assert max(r["preset"][1:]) > r["preset"][0] == r["default"][0], r


def test_priors_go_through_comfy_model_management(tmp_path):
    """A prior as ComfyUI's ModelPatcher: loaded by load_models_gpu, unloadable by ComfyUI and loaded again by
    the next node that uses it, and loaded together with the checkpoint and its VAE in the ascent."""
    r = _in_process(tmp_path, "check_memory.py")
    assert r["patcher_of_prior"] and r["size_mb"] > 0
    assert r["loaded_after_ready"] and r["unloaded"] and r["reloaded_by_node"] and r["same_score"]
    assert r["loaded_with_checkpoint"] and r["prior_loaded_after_ascent"]
    assert len(r["ascent_scores"]) == 2 and all(s == s for s in r["ascent_scores"])
