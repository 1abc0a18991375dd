"""Priors as ComfyUI nodes: load, fuse, score."""
from __future__ import annotations

import torch

from ..core.priors import FUSION_MODES
from . import comfy, memory
from .schema import Input, Node, Output, Schema
from .types import CATEGORY, IQA_PRIOR, to_bchw

DEVICES = ["auto", "cpu", "gpu"]


def prior_names() -> list[str]:
    """Every loadable name, pyiqa's included even when pyiqa is not installed (the node then says what to
    install when one is chosen); the built-ins alone if even that list cannot be read (the pack must load)."""
    from ..core.priors import BUILTINS
    try:
        from ..core.priors import available
        names = available()
    except Exception:  # a broken pyiqa install: the node reports it when used
        names = ["builtin", "hybrid-builtin", *BUILTINS]
    first = ["builtin", "hybrid-builtin", "niqe", "brisque", "piqe", "cnniqa-builtin"]
    return first + [n for n in names if n not in first]


def device_of(choice: str) -> torch.device:
    """The device a node's ``device`` widget (auto, cpu, gpu) names; auto is ComfyUI's own."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "gpu" and not torch.cuda.is_available():
        raise ValueError("device 'gpu' chosen but no CUDA GPU is available; choose 'auto' or 'cpu'")
    return comfy.default_device() if choice == "auto" else torch.device("cuda")


class LoadIQAPrior(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_LoadIQAPrior", display_name="Load IQA Prior", category=CATEGORY,
        description=("Loads a no-reference image-quality model as a differentiable prior (higher = better). "
                     "The built-ins (NIQE, BRISQUE, PIQE, the learned CNNIQA-builtin, and 'builtin' = NIQE+BRISQUE) "
                     "need no download; pyiqa "
                     "models read their weights from models/iqa (see the README for offline placement)."),
        inputs=[
            Input("name", "COMBO", "NR-IQA model. 'builtin' fuses NIQE and BRISQUE and runs anywhere; other names "
                  "are pyiqa metrics (weights in models/iqa).", options=prior_names, default="builtin"),
            Input("calibration", "COMBO", "'default' maps the score to 0-100 (100 = best) with shipped or "
                  "models/iqa/iqa_map_calibration.json constants, so fidelity weights and fusion mean the same for "
                  "every prior; 'none' uses the model's native score.", options=["default", "none"],
                  default="default"),
            Input("device", "COMBO", "Where the IQA model runs; 'auto' follows ComfyUI's device.", options=DEVICES,
                  default="auto"),
            Input("weights_file", "COMBO", "A local network in models/iqa to use instead of a named model "
                  "(safetensors CNNIQA weights, 'cnniqa' architecture).", optional=True,
                  options=lambda: ["none", *comfy.iqa_files()], default="none"),
        ],
        outputs=[Output(IQA_PRIOR, "prior")],
    )

    @classmethod
    def execute(cls, name, calibration="default", device="auto", weights_file="none"):
        from ..core import priors
        dev = device_of(device)
        folder = comfy.iqa_folder()
        try:
            if weights_file and weights_file != "none":
                path = comfy.iqa_file_path(weights_file)
                if path is None:
                    raise FileNotFoundError(f"weights file '{weights_file}' is not in {folder or 'models/iqa'}: put "
                                            "it there and refresh ComfyUI (press R), or choose weights_file 'none'")
                prior = priors.load_local(path, device=memory.staging_device(dev), weights_dir=folder)
            else:
                prior = priors.load(name, weights_dir=folder, device=memory.staging_device(dev))
        except priors.PyiqaMissingError as e:
            raise RuntimeError(priors.pyiqa_backend.missing_message(e.metric, host="ComfyUI")) from None
        except ImportError as e:  # pyiqa present but one of what its metric imports is not
            raise RuntimeError(f"loading prior '{name}' failed: {e}. pyiqa's learned metrics need: "
                               + "; ".join(priors.pyiqa_backend.light_install_commands())
                               + ". Run that in ComfyUI's Python, then restart ComfyUI.") from None
        if calibration == "none":
            _drop_calibration(prior)
        return (memory.manage(prior, dev).eval(),)  # ComfyUI loads and unloads it (nodes/memory.py)


def _drop_calibration(prior) -> None:
    if prior.native_is_calibrated:
        raise ValueError("a fused prior combines calibrated scores; keep calibration 'default' for it")
    prior.calibration = None


def _member(k: int, optional: bool = False) -> list[Input]:
    return [Input(f"prior_{k}", IQA_PRIOR, "A prior with calibration 'default'.", optional=optional),
            Input(f"weight_{k}", "FLOAT", "Relative weight of this prior (weights are normalised; 0 drops it).",
                  optional=optional, default=1.0, min=0.0, max=100.0, step=0.05)]


class FusePriors(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_FusePriors", display_name="Fuse Priors", category=CATEGORY,
        description=("Combines two to four priors into one: a weighted mean, geometric mean or soft minimum of "
                     "their calibrated 0-100 scores, optionally averaged over scales. The soft minimum makes it hard "
                     "to fool one metric at the expense of another."),
        inputs=[
            *_member(1), *_member(2),
            Input("mode", "COMBO", "mean: weighted mean; geometric: weighted geometric mean; softmin: smooth "
                  "minimum, the gradient goes to the worst metric.", options=list(FUSION_MODES), default="mean"),
            Input("temperature", "FLOAT", "softmin only: smaller is closer to the minimum, larger to the mean "
                  "(0-100 scale).", default=10.0, min=0.1, max=100.0, step=0.1),
            Input("multiscale", "BOOLEAN", "Also score at 0.75x and average, so the result cannot be tuned to one "
                  "scale.", default=False),
            *_member(3, optional=True), *_member(4, optional=True),
        ],
        outputs=[Output(IQA_PRIOR, "prior")],
    )

    @classmethod
    def execute(cls, prior_1, weight_1, prior_2, weight_2, mode="mean", temperature=10.0, multiscale=False,
                prior_3=None, weight_3=1.0, prior_4=None, weight_4=1.0):
        from ..core.priors import MultiScalePrior, fuse
        members = [(p, w) for p, w in ((prior_1, weight_1), (prior_2, weight_2), (prior_3, weight_3),
                                        (prior_4, weight_4)) if p is not None]
        for p, _ in members:
            if not p.is_calibrated:
                raise ValueError(f"prior '{p.name}' has no calibration; load it with calibration 'default' "
                                 "(fusion averages calibrated 0-100 scores)")
        name = f"{mode}(" + ",".join(f"{p.name}:{w:g}" for p, w in members if w) + ")"
        fused = fuse(members, mode=mode, temperature=temperature, name=name)
        return (MultiScalePrior(fused, name=f"ms-{name}") if multiscale else fused,)


class IQAScore(Node):
    SCHEMA = Schema(
        node_id="IQAMAP_IQAScore", display_name="IQA Score", category=CATEGORY,
        description="Scores images with a prior and shows the score on the node (native score, and 0-100 if "
                    "calibrated).",
        inputs=[Input("image", "IMAGE", "Images to score (a batch gives one line each)."),
                Input("prior", IQA_PRIOR, "The NR-IQA model that scores.")],
        outputs=[Output("FLOAT", "score", "Mean native score over the batch (the metric's own scale and direction)."),
                 Output("STRING", "text", "One line per image.")],
        is_output_node=True,
    )

    @classmethod
    def execute(cls, image, prior):
        from ..core.map import comparable_score
        memory.ready(prior)
        img = to_bchw(image)
        with torch.no_grad():
            native = prior.native(img).float().cpu()
            comparable = comparable_score(prior, img).float().cpu()
        direction = "lower is better" if getattr(prior, "lower_better", False) else "higher is better"
        from ..core.priors.base import is_calibrated
        calibrated = is_calibrated(prior)
        lines = [f"{prior.name} [{i}]: {float(n):.3f} ({direction})"
                 + (f", {float(c):.1f}/100" if calibrated else "") for i, (n, c) in enumerate(zip(native, comparable))]
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (float(native.mean()), text)}
