"""ComfyUI's model management hooks (nodes/memory.py), with a fake ``comfy.model_management`` in sys.modules:
what the pack loads is registered as a ModelPatcher and loaded through ``load_models_gpu`` by the nodes that
use it, training asks ``free_memory`` for room and empties the cache after. The real ComfyUI run is
tests/test_comfyui.py::test_priors_go_through_comfy_model_management."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from iqa_map.core import priors, sr
from iqa_map.nodes import NODES, memory


class FakeMM(types.ModuleType):
    """Records the calls; moves nothing (no GPU on CI), so the networks run on the CPU as they are."""

    def __init__(self):
        super().__init__("comfy.model_management")
        self.calls = []

    def get_torch_device(self):
        return torch.device("cuda", 0)

    def unet_offload_device(self):
        return torch.device("cpu")

    def throw_exception_if_processing_interrupted(self):
        pass

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        self.calls.append(("load_models_gpu", list(models), force_full_load))

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.calls.append(("free_memory", memory_required, device, [k.model for k in keep_loaded]))

    def soft_empty_cache(self, force=False):
        self.calls.append(("soft_empty_cache",))

    class LoadedModel:
        def __init__(self, model):
            self.model = model

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


class FakePatcher:
    def __init__(self, model, load_device, offload_device, size=0):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        model.device = offload_device  # as ComfyUI's ModelPatcher does: why priors sit in memory.Held


@pytest.fixture
def mm(monkeypatch):
    fake = FakeMM()
    comfy_pkg = types.ModuleType("comfy")
    patcher_mod = types.ModuleType("comfy.model_patcher")
    patcher_mod.ModelPatcher = FakePatcher
    comfy_pkg.model_management, comfy_pkg.model_patcher = fake, patcher_mod
    for name, mod in (("comfy", comfy_pkg), ("comfy.model_management", fake), ("comfy.model_patcher", patcher_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    return fake


def _image(seed=0, size=64):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))  # IMAGE [B,H,W,C]


def test_a_loaded_prior_is_a_model_patcher_that_every_user_loads(mm):
    with torch.inference_mode():
        (prior,) = NODES["IQAMAP_LoadIQAPrior"].execute("cnniqa-builtin", device="auto")
    (p,) = memory.patchers(prior)
    assert isinstance(p.model, memory.Held) and p.model.net is prior
    assert p.load_device == torch.device("cuda", 0) and p.offload_device == torch.device("cpu")
    assert mm.named("load_models_gpu") == [("load_models_gpu", [p], True)]  # fully: plain torch, no low-VRAM casts
    assert "_iqa_map_patcher" not in prior.state_dict() and not any(k.startswith("_iqa") for k in prior.state_dict())
    with torch.inference_mode():
        score, _ = NODES["IQAMAP_IQAScore"].execute(_image(), prior)["result"]
        NODES["IQAMAP_IQAQualityMap"].execute(_image(), prior, window=32, stride=32)
        NODES["IQAMAP_IQASelect"].execute(torch.cat([_image(0), _image(1)]), prior)
    assert isinstance(score, float)
    assert [c[1] for c in mm.named("load_models_gpu")] == [[p]] * 4  # load + score + map + select
    # a fused prior loads its members
    fused = NODES["IQAMAP_FusePriors"].execute(prior, 1.0, priors.load("brisque"), 1.0)[0]
    assert memory.patchers(fused) == [p]


def test_cpu_priors_and_weightless_ones_stay_plain(mm):
    with torch.inference_mode():
        (cpu_prior,) = NODES["IQAMAP_LoadIQAPrior"].execute("cnniqa-builtin", device="cpu")
    assert memory.patchers(cpu_prior) == [] and mm.calls == []
    memory.ready(cpu_prior)  # nothing to load: no call
    assert mm.calls == []


@pytest.fixture
def train_on_cpu(monkeypatch):
    """ComfyUI's (fake) device is a GPU this machine lacks: training runs on the CPU, the device asked recorded."""
    asked, real = [], sr.finetune

    def finetune(*args, device=None, **kwargs):
        asked.append(device)
        return real(*args, device="cpu", **kwargs)
    monkeypatch.setattr(sr, "finetune", finetune)
    return asked


def test_fine_tuning_makes_room_keeps_the_prior_and_empties_the_cache(mm, tmp_path, train_on_cpu):
    from PIL import Image
    from test_sr import photos, tiny_state

    with torch.inference_mode():
        (prior,) = NODES["IQAMAP_LoadIQAPrior"].execute("cnniqa-builtin", device="auto")
    folder = photos(tmp_path / "hr", n=1, size=48)
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255)
                          for p in sorted(folder.glob("*.png"))])
    base = sr.load_upscaler(tiny_state())
    mm.calls.clear()
    with torch.inference_mode():
        _, report = NODES["IQAMAP_IQAFineTuneUpscaler"].execute(base, images, prior, steps=1, rank=2, crop=16,
                                                                batch=1)
    assert len(json.loads(report)["history"]) == 1 and train_on_cpu == [torch.device("cuda", 0)]
    names = [c[0] for c in mm.calls]
    assert names == ["load_models_gpu", "free_memory", "soft_empty_cache"], names
    _, size, device, kept = mm.named("free_memory")[0]
    weights = sum(t.numel() * t.element_size() for t in base.model.state_dict().values())
    assert size == memory.training_bytes(base.model, 1, 16 * base.scale) > 4 * weights
    assert device == torch.device("cuda", 0) and kept == memory.patchers(prior)


def test_cache_emptied_even_when_training_fails(mm, monkeypatch):
    from test_sr import tiny_state

    def finetune(*args, **kwargs):
        raise RuntimeError("training stopped")  # an interrupt, an OOM...
    monkeypatch.setattr(sr, "finetune", finetune)
    (prior,) = NODES["IQAMAP_LoadIQAPrior"].execute("cnniqa-builtin", device="auto")
    mm.calls.clear()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="training stopped"):
        NODES["IQAMAP_IQAFineTuneUpscaler"].execute(sr.load_upscaler(tiny_state()), _image(size=48), prior,
                                                    steps=1, rank=2, crop=16, batch=1)
    assert [c[0] for c in mm.calls] == ["load_models_gpu", "free_memory", "soft_empty_cache"], mm.calls


def test_sampler_gets_the_priors_and_vae_as_additional_models(mm, monkeypatch):
    """run_in_comfy_sampler: a clone of the MODEL carries the extra patchers (ComfyUI loads them with it)."""
    from iqa_map.nodes import comfy as C

    class Model:
        def __init__(self):
            self.extra = {}

        def clone(self):
            c = Model()
            c.parent = self
            return c

        def set_additional_models(self, key, models):
            self.extra[key] = models

    seen = {}

    class Guider:
        def __init__(self, model):
            seen["model"] = model

        def __getattr__(self, name):
            raise StopIteration  # stop at the first use: only the model handed over is under test

    samplers = types.ModuleType("comfy.samplers")
    samplers.CFGGuider = Guider
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)
    monkeypatch.setattr(sys.modules["comfy"], "samplers", samplers, raising=False)
    monkeypatch.setattr(C, "check_model_sampling", lambda m: None)
    base, extra = Model(), [object(), object()]
    with pytest.raises(StopIteration):
        C.run_in_comfy_sampler(base, torch.zeros(1, 4, 8, 8), torch.tensor([1.0, 0.0]), None, positive=[],
                               extra_models=extra)
    assert seen["model"].parent is base and seen["model"].extra == {"iqa_map": extra} and base.extra == {}


def test_pixel_models_are_managed_and_loaded_by_invert_and_ascent(mm, monkeypatch):
    """Load Built-in Prior Model's network is a ModelPatcher too; DDIM Invert and Latent MAP Ascent load it
    (the ascent with its prior, in one call)."""
    from iqa_map.nodes.types import InversionState

    with torch.inference_mode():
        model, vae = NODES["IQAMAP_LoadBuiltinPriorModel"].execute("auto")
        (prior,) = NODES["IQAMAP_LoadIQAPrior"].execute("cnniqa-builtin", device="auto")
    (pm,), (pp,) = memory.patchers(model.denoiser.network), memory.patchers(prior)
    assert pm.model.net is model.denoiser.network and pm.load_device == torch.device("cuda", 0)
    mm.calls.clear()
    seen = {}
    from iqa_map.core import map as M
    monkeypatch.setattr(M, "invert", lambda *a, **k: seen.setdefault("invert", types.SimpleNamespace(
        latent=torch.zeros(1, 3, 16, 16))))
    monkeypatch.setattr(M, "ascend_inversion", lambda *a, **k: (_ for _ in ()).throw(KeyError("stop")))
    with torch.inference_mode():
        (inv,) = NODES["IQAMAP_DDIMInvert"].execute(model, {"samples": torch.rand(1, 3, 16, 16)})
        with pytest.raises(KeyError):
            NODES["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv)
    assert isinstance(inv, InversionState) and inv.inversion is seen["invert"]
    loads = [c[1] for c in mm.named("load_models_gpu")]
    assert loads[0] == [pm] and [pm, pp] in loads, loads


def test_complete_moves_what_a_partial_load_left_behind(mm):
    """After a low-VRAM (partial) load with the sampler's model, a prior's leftover weights join the rest
    ('meta' stands for the GPU here: any device other than the CPU the weights are on)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    p = memory.register(net, torch.device("meta"))
    net[0].to("meta")  # partly loaded
    memory.complete([p])
    assert all(t.device.type == "meta" for t in net.parameters())
    memory.complete([p])  # all there: nothing to do
