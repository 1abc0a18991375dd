"""The node pack without ComfyUI: contracts, and every node function on small real models."""
import inspect
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, dev_photo

from iqa_map.nodes import DISPLAY_NAMES, NODES
from iqa_map.nodes.map_nodes import _weight_map
from iqa_map.nodes.schema import legacy_input_types
from iqa_map.nodes.types import CoreModel, PassthroughVAE

N = NODES
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.mark.parametrize("key", sorted(N))
def test_node_contract(key):
    cls = N[key]
    assert cls.SCHEMA.node_id == key and DISPLAY_NAMES[key] == cls.SCHEMA.display_name
    assert cls.CATEGORY == "IQA-MAP" and len(cls.DESCRIPTION) > 40
    spec = cls.INPUT_TYPES()
    assert spec == legacy_input_types(cls.SCHEMA)  # the V1 view is the schema's (as is the V3 one, nodes/v3.py)
    assert set(spec) <= {"required", "optional"} and spec["required"]
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    if hasattr(cls, "RETURN_NAMES"):
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    fn = getattr(cls, cls.FUNCTION)
    params = dict(inspect.signature(fn).parameters)
    # The inputs generated from the library's settings arrive as keyword arguments (nodes/settings_inputs.py).
    generated = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    params = {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    for section, inputs in spec.items():
        for name, (kind, *opts) in inputs.items():
            assert opts and opts[0].get("tooltip"), f"{key}.{name} has no tooltip"
            if name not in params:
                assert generated, f"{key}.{cls.FUNCTION} does not take '{name}'"
                continue
            if section == "optional":
                assert params[name].default is not inspect.Parameter.empty, f"optional {key}.{name} needs a default"
            if isinstance(kind, list):
                assert opts[0].get("default", kind[0]) in kind
            else:
                assert kind in WIDGETS or kind.isupper(), f"{key}.{name}: unknown type {kind}"
    # Every parameter of the function is a declared input.
    declared = {n for inputs in spec.values() for n in inputs}
    assert set(params) <= declared


INTERFACE = REPO / "tests" / "node_interface.json"


def node_interface() -> dict:
    """What saved workflows rely on, per node: inputs in socket/widget order with type, choices (lists that
    follow files or installs: "dynamic"), default and range; the outputs. Tooltips, descriptions and display
    hints (multiline, advanced) may change freely and are left out."""
    def entry(i):
        e = {"id": i.id, "type": i.type, "optional": i.optional}
        if i.type == "COMBO":
            e["options"] = "dynamic" if callable(i.options) else i.choices()
        return {**e, **{k: getattr(i, k) for k in ("default", "min", "max", "step") if getattr(i, k) is not None}}

    return {key: {"display_name": cls.SCHEMA.display_name, "output_node": cls.SCHEMA.is_output_node,
                  "inputs": [entry(i) for i in cls.SCHEMA.ordered_inputs()],
                  "outputs": [[o.type, o.label] for o in cls.SCHEMA.outputs]} for key, cls in N.items()}


def _dump_interface(interface: dict) -> str:
    """One line per input, so a diff of the file reads as the change of interface."""
    nodes = []
    for key, d in interface.items():
        inputs = ",\n".join("   " + json.dumps(i) for i in d["inputs"])
        nodes.append(f' {json.dumps(key)}: {{"display_name": {json.dumps(d["display_name"])}, '
                     f'"output_node": {json.dumps(d["output_node"])},\n  "inputs": [\n{inputs}\n  ],\n'
                     f'  "outputs": {json.dumps(d["outputs"])}}}')
    return "{\n" + ",\n".join(nodes) + "\n}\n"


def test_node_interface_is_unchanged():
    """Node ids, input names and order, types, choices, defaults, ranges and outputs as saved workflows were made
    with (ComfyUI stores widget values by position). After an intended change, rewrite the file with
    ``python tests/test_nodes.py`` and check that the shipped workflows still pass."""
    assert json.loads(_dump_interface(node_interface())) == node_interface()  # the file format round-trips
    assert node_interface() == json.loads(INTERFACE.read_text()), "the node interface changed (see the docstring)"


def test_settings_inputs_are_generated_and_keep_their_places():
    """The inputs mirroring the library's settings come from its metadata (tests/test_settings.py checks them
    field by field); those saved workflows know stay where they were, new ones come last."""
    from iqa_map.nodes.map_nodes import INVERSION_SETTINGS_INPUTS, MAP_SETTINGS_INPUTS
    for key, inputs in (("IQAMAP_DDIMInvert", INVERSION_SETTINGS_INPUTS),
                        ("IQAMAP_LatentMAPAscent", MAP_SETTINGS_INPUTS)):
        declared = N[key].SCHEMA.inputs
        assert all(any(i is d for d in declared) for i in inputs), key
    assert [i.id for i in INVERSION_SETTINGS_INPUTS] == ["steps", "strength", "mix"]
    ids = [i.id for i in MAP_SETTINGS_INPUTS]
    assert ids[:6] == ["fidelity", "fidelity_weight", "iterations", "learning_rate", "optimizer", "seed"]
    assert ids.index("hack_reference") < ids.index("lr_schedule")


def test_schema_renders_advanced_and_orders_required_first():
    from iqa_map.nodes.schema import Input, Schema, check_choices
    s = Schema("X", "X", "x", "IQA-MAP", inputs=[
        Input("a", "FLOAT", "a", optional=True, default=0.5, advanced=True), Input("b", "MODEL", "b"),
        Input("c", "COMBO", "c", options=lambda: ["p", "q"], default="q")])
    spec = legacy_input_types(s)
    assert list(spec["required"]) == ["b", "c"] and list(spec["optional"]) == ["a"]
    assert spec["optional"]["a"] == ("FLOAT", {"default": 0.5, "tooltip": "a", "advanced": True})
    assert spec["required"]["c"] == (["p", "q"], {"default": "q", "tooltip": "c"})
    with pytest.raises(ValueError, match="COMBO"):
        Input("d", "COMBO", "d")
    check_choices(s, {"c": "p", "b": object()})
    with pytest.raises(ValueError, match="X: c 'r' is not one of: p, q"):
        check_choices(s, {"c": "r"})
    with pytest.raises(ValueError, match="repeat"):
        Schema("X", "X", "x", "IQA-MAP", inputs=[Input("a", "MODEL", "a"), Input("a", "VAE", "a")])


@pytest.fixture(scope="module")
def cpu_graph():
    """The CPU workflow's chain, run under inference mode as ComfyUI's executor runs nodes."""
    img = (dev_photo(crop=48, dtype=torch.float32) + 1) / 2
    image = img.movedim(1, -1)  # IMAGE: [B,H,W,C]
    with torch.inference_mode():
        model, vae = N["IQAMAP_LoadBuiltinPriorModel"].execute("cpu")
        prior, = N["IQAMAP_LoadIQAPrior"].execute("builtin", "default", "cpu")
        monitor, = N["IQAMAP_LoadIQAPrior"].execute("piqe", "default", "cpu")
        latent = {"samples": vae.encode(image)}
        inv, = N["IQAMAP_DDIMInvert"].execute(model, latent, "edict", steps=3, strength=0.35)
        out, history = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=3, monitor=monitor,
                                                           on_hack="warn", hack_reference="peak")
        decoded, = N["IQAMAP_Decode"].execute(out, vae)
        scored = N["IQAMAP_IQAScore"].execute(decoded, prior)
    return SimpleNamespace(image=image, model=model, vae=vae, prior=prior, monitor=monitor, latent=latent, inv=inv,
                           out=out, report=json.loads(history), decoded=decoded, scored=scored)


def test_cpu_graph_enhances(cpu_graph):
    g = cpu_graph
    assert g.latent["samples"].shape == (1, 3, 48, 48)
    assert g.out["samples"].shape == (1, 3, 48, 48)
    r = g.report
    for field in ("settings", "history", "inversion_error", "denoiser_evals", "wall_seconds", "peak_memory_bytes",
                  "input_scores", "output_scores", "psnr_vs_input", "ssim_vs_input"):
        assert field in r
    assert r["inversion_error"] < 1e-4  # EDICT is exact
    assert len(r["history"]) == 4 and "monitors" in r["history"][0]
    assert r["settings"]["hack_reference"] == "peak"
    best = max(h["objective"] for h in r["history"])
    assert best > r["history"][0]["objective"]
    assert r["output_scores"]["hybrid-builtin"] > r["input_scores"]["hybrid-builtin"]
    assert r["psnr_vs_input"] > 25


def test_decode_and_score_follow_comfy_conventions(cpu_graph):
    g = cpu_graph
    assert g.decoded.shape == (1, 48, 48, 3) and 0 <= float(g.decoded.min()) and float(g.decoded.max()) <= 1
    # The pass-through VAE round-trips images exactly, as ComfyUI's VAE Encode/Decode would use it.
    assert torch.allclose(g.vae.decode(g.vae.encode(g.image)), g.image, atol=1e-6)
    score, text = g.scored["result"]
    with torch.no_grad():
        expect = float(g.prior.native(g.decoded.movedim(-1, 1)))
    assert score == pytest.approx(expect, rel=1e-5)
    assert g.scored["ui"]["text"] == [text] and "hybrid-builtin" in text and "/100" in text


def test_mask_frees_pixels_from_fidelity(cpu_graph):
    g = cpu_graph
    w = _weight_map(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), (1, 3, 4, 4), "cpu")
    assert w.shape == (1, 1, 4, 4) and float(w[0, 0, 0, 0]) == 1.0 and float(w[0, 0, 0, -1]) == 0.0
    with torch.inference_mode():
        _, hist = N["IQAMAP_LatentMAPAscent"].execute(g.model, g.vae, g.prior, g.inv, fidelity="mse",
                                                      iterations=1, mask=torch.ones(48, 48))
    # Free everywhere: the fidelity term is exactly zero at every iterate.
    assert all(h["fidelity"] == 0.0 for h in json.loads(hist)["history"])


def test_ddim_inversion_is_approximate_edict_exact(cpu_graph):
    g = cpu_graph
    with torch.inference_mode():
        inv, = N["IQAMAP_DDIMInvert"].execute(g.model, g.latent, "ddim", steps=3, strength=0.35)
        _, hist = N["IQAMAP_LatentMAPAscent"].execute(g.model, g.vae, g.prior, inv, iterations=0)
    assert json.loads(hist)["inversion_error"] > 10 * max(g.report["inversion_error"], 1e-9)


def test_fuse_priors_is_weighted_mean_of_calibrated_scores(cpu_graph):
    with torch.inference_mode():
        niqe, = N["IQAMAP_LoadIQAPrior"].execute("niqe")
        brisque, = N["IQAMAP_LoadIQAPrior"].execute("brisque")
        fused, = N["IQAMAP_FusePriors"].execute(niqe, 3.0, brisque, 1.0, "mean")
        ms, = N["IQAMAP_FusePriors"].execute(niqe, 1.0, brisque, 1.0, "softmin", multiscale=True)
        img = (dev_photo(crop=192, dtype=torch.float32) + 1) / 2  # above every member's minimum size
        expect = (3 * niqe.calibrated(img) + brisque.calibrated(img)) / 4
        assert torch.allclose(fused.calibrated(img).double(), expect.double(), atol=1e-4)
        assert ms.name.startswith("ms-softmin(") and torch.isfinite(ms(img)).all()
        raw, = N["IQAMAP_LoadIQAPrior"].execute("niqe", calibration="none")
        with pytest.raises(ValueError, match="calibration"):
            N["IQAMAP_FusePriors"].execute(raw, 1.0, brisque, 1.0)


def test_uncalibrated_prior_optimises_native_score(cpu_graph):
    from iqa_map.core.map import comparable_score
    with torch.inference_mode():
        raw, = N["IQAMAP_LoadIQAPrior"].execute("niqe", calibration="none")
        img = cpu_graph.decoded.movedim(-1, 1)
        assert raw.calibration is None
        assert torch.allclose(comparable_score(raw, img), -raw.native(img))  # NIQE: lower is better


def test_clear_errors(cpu_graph):
    g = cpu_graph
    with pytest.raises(ValueError, match="unknown prior 'niqee'.*niqe"):
        N["IQAMAP_LoadIQAPrior"].execute("niqee")
    with pytest.raises(TypeError, match="only with IQA-MAP nodes"):
        g.model.model_options  # what KSampler would touch first
    other = CoreModel(g.model.denoiser, "other")
    with pytest.raises(ValueError, match="different MODEL"):
        N["IQAMAP_LatentMAPAscent"].execute(other, g.vae, g.prior, g.inv, iterations=1)
    with pytest.raises(ValueError, match="checkpoint's VAE"):
        PassthroughVAE().decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(TypeError, match="LATENT"):
        N["IQAMAP_DDIMInvert"].execute(g.model, g.image)
    with pytest.raises(TypeError, match="DDIM Invert"):
        N["IQAMAP_LatentMAPAscent"].execute(g.model, g.vae, g.prior, "not an inversion")


class _EchoDRUNet(torch.nn.Module):
    """DRUNet's interface (image + noise-level channel in, image out); records what it was given."""

    def forward(self, x):
        self.seen = x.detach()
        return x[:, :3]


def test_denoiser_as_diffusion_model_follows_spandrel_conventions():
    from iqa_map.core.models.spandrel_denoiser import denoiser_from_spandrel
    net = _EchoDRUNet()
    desc = SimpleNamespace(architecture=SimpleNamespace(id="DRUNet"), model=net, scale=1,
                           size_requirements=SimpleNamespace(multiple_of=8))
    model, = N["IQAMAP_DenoiserAsDiffusionModel"].execute(desc, 0.0, 0.5)
    den = model.denoiser
    assert den.sigma_max == pytest.approx(2 * 50 / 255)  # trained range, on the [-1, 1] scale
    x = torch.rand(1, 3, 30, 30) * 2 - 1
    out = den(x, 0.2)
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-6)  # identity network -> identity denoiser
    assert net.seen.shape == (1, 4, 32, 32)  # padded to DRUNet's multiple of 8
    assert torch.allclose(net.seen[:, 3], torch.full((1, 32, 32), 0.1))  # sigma 0.2 on [-1,1] = 0.1 on [0,1]
    with pytest.raises(ValueError, match="not a Gaussian denoiser.*DnCNN, DRUNet"):
        denoiser_from_spandrel(SimpleNamespace(architecture=SimpleNamespace(id="ESRGAN"), model=net, scale=4))
    with pytest.raises(ValueError, match="upscales x4"):
        denoiser_from_spandrel(SimpleNamespace(architecture=SimpleNamespace(id="SCUNet"), model=net, scale=4))


def test_pack_loads_without_pyiqa_lists_its_metrics_and_says_what_to_install():
    """pyiqa is optional: every node registers, the built-ins run, Load IQA Prior still lists pyiqa's metrics,
    and choosing one says exactly what to run in this Python (the light install), never installing anything."""
    code = (
        "import sys; sys.modules['pyiqa'] = None\n"
        "import iqa_map\n"
        "from iqa_map.nodes import NODES as N\n"
        f"assert len(N) == {len(N)}, N\n"  # every node registers without pyiqa
        "names = N['IQAMAP_LoadIQAPrior'].INPUT_TYPES()['required']['name'][0]\n"
        "assert names[0] == 'builtin' and {'musiq', 'liqe', 'topiq_nr', 'clipiqa'} <= set(names), names\n"
        "p, = N['IQAMAP_LoadIQAPrior'].execute('niqe')\n"
        "print('NIQE', type(p).__module__)\n"
        "try:\n"
        "    N['IQAMAP_LoadIQAPrior'].execute('musiq')\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
        "assert sys.modules['pyiqa'] is None\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "NIQE iqa_map.core.priors.builtin" in out.stdout
    err = out.stdout.split("ERR ", 1)[1]
    assert err.startswith("'musiq' is a pyiqa metric, and pyiqa is not installed in this Python")
    assert f'"{sys.executable}" -m pip install --no-deps pyiqa' in err
    assert f'"{sys.executable}" -m pip install timm openai-clip pyyaml requests huggingface_hub' in err
    assert err.rstrip().endswith("then restart ComfyUI.")


def test_select_and_quality_map_nodes(piqe, candidates):
    images = candidates.movedim(1, -1)
    out = N["IQAMAP_IQASelect"].execute(images[:2], piqe, images_2=images[2:])
    img, index, ranking = out["result"]
    info = json.loads(ranking)
    assert index == info["order"][0] and torch.equal(img, images[index:index + 1])
    assert out["ui"]["text"][0].startswith("#1: candidate")
    tiled, idx, _ = N["IQAMAP_IQASelect"].execute(images, piqe, "tiles", tile=64, overlap=16)["result"]
    assert idx == -1 and tiled.shape == (1, 96, 96, 3)
    with pytest.raises(ValueError, match="IQA Select: .*same size"):
        N["IQAMAP_IQASelect"].execute(images, piqe, images_2=torch.rand(1, 64, 64, 3))
    with torch.inference_mode():
        mask, heat, summary = N["IQAMAP_IQAQualityMap"].execute(images[:1], piqe, 32, 16)
        inv, _, _ = N["IQAMAP_IQAQualityMap"].execute(images[:1], piqe, 32, 16, invert=True)
    assert mask.shape == (1, 96, 96) and 0 <= float(mask.min()) and float(mask.max()) <= 1
    assert torch.allclose(inv, 1 - mask) and heat.shape[-1] == 3 and heat.shape[2] == 96
    assert "piqe" in summary


if __name__ == "__main__":  # rewrite node_interface.json after an intended interface change
    INTERFACE.write_text(_dump_interface(node_interface()))
