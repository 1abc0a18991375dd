"""ComfyUI's path against the library's, on the same model: per call and per enhancement.

    COMFYUI_PATH=<checkout> python -m benchmarks.bench_comfy_path [--iterations 3] [--repeat 20]

The model is the tiny SD 1.5 single-file checkpoint the ComfyUI tests build
(``tests/comfy_scripts/build_tiny_models.py``, random weights), loaded with ComfyUI's
own loader. The ComfyUI path is what the nodes run: a ``CFGGuider`` with a custom
``KSAMPLER`` whose sampler calls the guider's denoiser (conditioning batching, model
patches, wrappers). The library path calls the same network directly
(``BaseModel.apply_model`` with the same conditioning) under the same core loop. Both
on the CPU at batch 1, so the difference is ComfyUI's per-call overhead: on a tiny
model it is an upper bound of the relative cost, which shrinks as the network grows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=str(REPO / "out" / "bench" / "comfy_path.json"))
    args = ap.parse_args(argv)
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    models = Path(tempfile.mkdtemp()) / "models"
    subprocess.run([sys.executable, str(REPO / "tests" / "comfy_scripts" / "build_tiny_models.py"), str(models)],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO.parent)})
    sys.path.insert(0, comfy_path)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd
    import nodes as core_nodes
    import torch

    from iqa_map.core.map.ascent import ascend_inversion
    from iqa_map.core.sampling.inversion import invert
    from iqa_map.core.models.base import Denoiser
    from iqa_map.nodes import NODES as N
    from iqa_map.nodes import comfy as C

    torch.set_num_threads(1)
    torch.manual_seed(0)
    img = torch.rand(1, 64, 64, 3)
    res = {"steps": args.steps, "iterations": args.iterations, "repeat": args.repeat}
    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(models / "checkpoints" / "tiny_sd15.safetensors"), output_vae=True, output_clip=True)
        pos, = core_nodes.CLIPTextEncode().encode(clip, "")
        lat, = core_nodes.VAEEncode().encode(vae, img)
        prior, = N["IQAMAP_LoadIQAPrior"].execute("niqe", "default", "cpu")
    ms = model.get_model_object("model_sampling")
    base = model.model
    context = pos[0][0]

    class Direct(Denoiser):
        """The same network without ComfyUI's sampler around it (what a library adapter does)."""
        network = base

        def denoise(self, x, sigma, cond=None):
            s = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
            return base.apply_model(x.float(), s.float(), c_crossattn=context).to(x.dtype)

    direct = Direct(float(ms.sigma_min), float(ms.sigma_max))
    sigmas = C.comfy_sigmas(model, "normal", args.steps, 1.0)
    x = lat["samples"].double() * 0 + torch.randn(1, 4, 8, 8, dtype=torch.float64)

    def timed(fn):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e3

    calls = {}

    def in_comfy(den, z):
        with torch.no_grad():
            calls["comfy_ms"] = timed(lambda: den.eps(x, 3.0))
        return z

    C.run_in_comfy_sampler(model, lat["samples"], sigmas, in_comfy, pos)
    with torch.no_grad():
        calls["direct_ms"] = timed(lambda: direct.eps(x, 3.0))
    res["per_call"] = calls

    runs = {}
    t = time.perf_counter()
    with torch.inference_mode():
        inv, = N["IQAMAP_DDIMInvert"].execute(model, lat, "edict", steps=args.steps, strength=1.0, positive=pos,
                                             scheduler="normal")
        _, hist = N["IQAMAP_LatentMAPAscent"].execute(model, vae, prior, inv, iterations=args.iterations)
    runs["comfy_nodes_s"] = time.perf_counter() - t
    report = json.loads(hist)
    t = time.perf_counter()
    codec = C.ComfyVAECodec(vae, model.get_model_object("latent_format"))
    z0 = model.get_model_object("latent_format").process_in(lat["samples"].clone())
    linv = invert(direct, z0, args.steps, 1.0, sigmas=sigmas)
    lres = ascend_inversion(direct, linv, prior, codec=codec, iterations=args.iterations)
    runs["library_s"] = time.perf_counter() - t
    runs["comfy_evals"] = report["denoiser_evals"]
    runs["library_evals"] = lres.report.denoiser_evals
    runs["same_scores"] = [round(h["score"], 4) for h in report["history"]] == \
        [round(h["score"], 4) for h in lres.report.history]
    res["whole_run"] = runs
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
