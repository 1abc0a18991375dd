"""The enhancement settings as data: one declaration per option, read by the library, the CLI and the nodes.

Each field of :class:`MapSettings` and :class:`TileSettings` carries an
:class:`~iqa_map.core.options.Option` in its metadata (group, help, choices, range,
advanced, its CLI flag and node input or why it is library-only there); the CLI
options and node inputs are generated from it and :meth:`MapSettings.validate`
checks choices and ranges from it, so adding an option is one edit here.

An option whose library value may be "unset" (``None``: the optimiser's own
learning rate, the fidelity's own weight, never stop early) is ``Optional``
here; a node widget cannot hold ``None``, so the option declares the one widget
value that stands for it (``unset``), and that is converted in one place.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..options import (Option, SettingsError, check, cli_flag, option, options, record,  # noqa: F401
                       renamed, value_type)  # re-exported: the surfaces read them as settings.X
from .objective import DEFAULT_WEIGHT
from .optim import LR_SCHEDULES, OPTIMISERS, default_lr
from ..models.checkpointing import MODES as CHECKPOINTING
from ..quality.qmap import WEIGHT_NORMALISATIONS

HACK_REFERENCES = ("peak", "start")  # what a monitor's fall is measured from (the default first)
LATENT_UNITS = ("vp", "ve")  # the coordinates the latent pair is optimised in (the default first)
ON_HACK = ("stop", "warn")
GRADS = ("reversible", "autograd")
# Priors offered for drawing the adaptive-fidelity map ("prior" = the optimised one); the library takes any name.
ADAPTIVE_PRIORS = ("cnniqa-builtin", "piqe", "brisque", "niqe", "prior")

#: Option groups, in the order the CLI's help and the docs list them.
GROUPS = {
    "inversion": "Inversion and sampling",
    "optimiser": "Optimiser",
    "stopping": "Stopping",
    "fidelity": "Fidelity",
    "adaptive": "Quality-adaptive fidelity",
    "guard": "Hack guard (needs a monitor prior)",
    "tiling": "Tiling (large photos)",
}


INVERT, ASCENT = "IQAMAP_DDIMInvert", "IQAMAP_LatentMAPAscent"

#: Few-step / distilled models (Flux schnell, LCM, SDXL Turbo/Lightning) at their own step count: the default
#: momentum step (lr 2) overshoots there (the prior rises, the objective falls and the ascent keeps iteration 0);
#: lr 0.02 climbs on the tiny AuraFlow (docs/models_comfyui.md, Few-step preset); on the real built-in denoiser
#: larger rates add speckle the prior rewards (docs/benchmarks.md, bench_fewstep).
FEW_STEP = dict(steps=4, strength=1.0, iterations=20, optimizer="momentum", lr=0.02)


@record("enhance", "compare")
@dataclasses.dataclass
class MapSettings:
    """Latent MAP ascent's settings (library defaults; :data:`PRESETS` are named starting points)."""
    # -- inversion and sampling
    steps: int = option(20, "EDICT steps (each costs two network evaluations per pass)", "inversion",
                        range=(1, 1000), node=(INVERT, "steps"))
    strength: float = option(1.0, "fraction of the noise schedule inverted, like KSampler's denoise; 1 = full "
                             "(the public recipe)", "inversion", range=(0.01, 1.0), step=0.01,
                             node=(INVERT, "strength"))
    mix: float = option(0.93, "EDICT mixing coefficient p (the paper's 0.93)", "inversion", range=(0.5, 0.999),
                        step=0.001, advanced=True, node=(INVERT, "mix"))
    checkpointing: str = option("auto", "recompute each transformer block's activations in the backward pass "
                                "instead of keeping them: far less memory for about 30 % more time per gradient; "
                                "auto: on for networks of 1e9 parameters or more (DiTs such as Flux and SD3.5)",
                                "inversion", choices=CHECKPOINTING, advanced=True,
                                node=(ASCENT, "checkpointing"))
    # -- optimiser
    iterations: int = option(20, "gradient steps", "optimiser", range=(0, 1000), node=(ASCENT, "iterations"))
    optimizer: str = option("momentum", "momentum: the public recipe's clipped update, for calibrated 0-100 "
                            "priors; adam: scale-free, for uncalibrated priors", "optimiser", choices=OPTIMISERS,
                            node=(ASCENT, "optimizer"))
    lr: Optional[float] = option(None, "learning rate; steps are taken in the unit-scale (vp) latent; few-step "
                                 f"models (LCM, Turbo, Flux schnell) need a smaller one: the few-step preset's "
                                 f"{FEW_STEP['lr']:g} at {FEW_STEP['steps']} steps", "optimiser",
                                 range=(0.0, 100.0), step=0.0005, cli="--lr", node=(ASCENT, "learning_rate"),
                                 unset=0.0, unset_help="the optimiser's own: " + ", ".join(
                                     f"{o} {default_lr(o):g}" for o in OPTIMISERS))
    lr_schedule: str = option("constant", "constant, or cosine: anneal the learning rate towards 0 over the "
                              "iterations", "optimiser", choices=LR_SCHEDULES, advanced=True,
                              node=(ASCENT, "lr_schedule"))
    units: str = option("vp", "latent coordinates the steps are taken in: vp (x / sqrt(1 + sigma0^2), unit scale, "
                        "the public recipe's) or ve (the sampler's x0 + sigma n)", "optimiser", choices=LATENT_UNITS,
                        advanced=True, node=(ASCENT, "units"))
    tied: bool = option(True, "average the gradients of the EDICT pair (the public recipe)", "optimiser",
                        advanced=True, node=(ASCENT, "tied"))
    perturb: float = option(0.0, "std of a seeded random perturbation added each step (DOODL uses 1e-4)",
                            "optimiser", range=(0.0, 1.0), step=0.0001, advanced=True, node=(ASCENT, "perturb"))
    seed: int = option(0, "seed of the optional perturbation; the same seed gives the same output", "optimiser",
                       range=(0, 0xFFFFFFFFFFFFFFFF), node=(ASCENT, "seed"))
    # -- stopping
    target: Optional[float] = option(None, "stop once the calibrated prior score reaches this (0-100)", "stopping",
                                     range=(0.0, 100.0), step=0.5, advanced=True, node=(ASCENT, "target"), unset=0.0,
                                     unset_help="never")
    patience: Optional[int] = option(None, "stop after this many iterations without improvement", "stopping",
                                     range=(1, 1000), metavar="N", node=(ASCENT, "patience"), unset=0,
                                     unset_help="never")
    # -- fidelity
    fidelity: str = option("nlpd", "distance to the input that is penalised: nlpd (perceptual, as in the paper), "
                           "mse, ssim (1 - SSIM) or none; on the command line NAME:WEIGHT also sets the weight",
                           "fidelity", choices=tuple(DEFAULT_WEIGHT), metavar="NAME[:WEIGHT]",
                           node=(ASCENT, "fidelity"))
    fidelity_weight: Optional[float] = option(None, "lambda: higher stays closer to the photo", "fidelity",
                                              range=(0.0, 1e6), step=0.5, node=(ASCENT, "fidelity_weight"),
                                              unset=-1.0, unset_help="the fidelity's own: " + ", ".join(
                                                  f"{k} {v:g}" for k, v in DEFAULT_WEIGHT.items()))
    # -- quality-adaptive fidelity
    adaptive_fidelity: Optional[str] = option(
        None, "weight the fidelity by this prior's quality map of the photo, so good regions are held closer than "
        "damaged ones ('prior' = the optimised prior; cnniqa-builtin draws the most accurate maps)", "adaptive",
        choices=ADAPTIVE_PRIORS, open_choices=True, cli_const="cnniqa-builtin", metavar="PRIOR",
        node=(ASCENT, "adaptive_fidelity"), unset="off", unset_help="no quality map")
    adaptive_floor: float = option(0.1, "weight of the worst region relative to the best (> 0 unless "
                                   "adaptive_normalise is mean)", "adaptive", range=(0.0, 1.0), step=0.01,
                                   node=(ASCENT, "adaptive_floor"))
    adaptive_normalise: str = option(
        "worst", "worst: keep lambda in the worst region and hold better ones up to 1/floor times tighter; damaged: "
        "keep lambda on every pixel the map classes as damaged (Otsu split) and hold the rest tighter; mean: move the "
        "same total fidelity from damaged to good regions (more prior gain, damaged regions drift more)", "adaptive",
        choices=WEIGHT_NORMALISATIONS, node=(ASCENT, "adaptive_normalise"))
    adaptive_window: int = option(48, "quality-map window (pixels)", "adaptive", range=(8, 1024), advanced=True,
                                  node=(ASCENT, "adaptive_window"))
    adaptive_stride: int = option(8, "quality-map stride (pixels)", "adaptive", range=(1, 1024), advanced=True,
                                  node=(ASCENT, "adaptive_stride"))
    # -- hack guard
    hack_margin: float = option(10.0, "monitor drop (calibrated points) that counts as hacking the prior", "guard",
                                range=(0.0, 100.0), step=0.5, node=(ASCENT, "hack_margin"))
    on_hack: str = option("stop", "stop: end the run and keep the best iterate before the hack; warn: only note it",
                          "guard", choices=ON_HACK, node=(ASCENT, "on_hack"))
    hack_reference: str = option("peak", "measure a monitor's drop from its best score so far (peak: catches a "
                                 "judge that first rises, then falls) or from its score on the photo (start)",
                                 "guard", choices=HACK_REFERENCES, node=(ASCENT, "hack_reference"))
    # -- library-only
    grad: str = option("reversible", "gradient path: reversible (constant memory) or autograd (the reference the "
                       "tests compare it with)", "optimiser", choices=GRADS, cli=None,
                       why="a test switch: both paths give the same gradient")

    def validate(self) -> None:
        check(self)
        if self.adaptive_fidelity and self.adaptive_normalise != "mean" and self.adaptive_floor == 0:
            raise SettingsError("adaptive_floor", "adaptive_floor (the worst region's fidelity weight relative to "
                                "the best) must be in (0, 1], or [0, 1] with adaptive_normalise='mean'")


def resolve_lr(s: MapSettings) -> MapSettings:
    """``s`` with a numeric ``lr`` (its own, else the optimiser's default), so the report records the step taken."""
    return s if s.lr is not None else dataclasses.replace(s, lr=default_lr(s.optimizer))


@record("enhance", "compare")
@dataclasses.dataclass
class TileSettings:
    """How a photo larger than one tile is split (:func:`~iqa_map.core.map.tiling.ascend_tiled`)."""
    tile: int = option(768, "enhance photos larger than this many pixels a side in overlapping tiles of this size, "
                       "one at a time, blended without seams: memory stays that of one tile (3-3.5 GiB on the CPU at "
                       "768 with the built-in model); 0 = never tile", "tiling", range=(0, 1 << 20), metavar="PIXELS",
                       why="ComfyUI has its own tiling nodes")
    tile_overlap: int = option(64, "pixels shared and blended between neighbouring tiles (8 latent pixels of "
                               "Stable Diffusion)", "tiling", range=(0, 1 << 19), metavar="PIXELS",
                               why="ComfyUI has its own tiling nodes")

    def validate(self) -> None:
        check(self)
        if 0 < self.tile < 64:
            raise SettingsError("tile", f"tile must be 0 (never tile) or at least 64 pixels; got {self.tile}")
        if self.tile and self.tile_overlap > self.tile // 2:
            raise SettingsError("tile_overlap", f"tile_overlap must be between 0 and half of tile "
                                f"({self.tile // 2}); got {self.tile_overlap}")


#: Named starting points for MapSettings (explicit settings override them):
#: ``default``: the defaults (full inversion, 20 steps, 20 momentum iterations): the recipe's gain with a sixth
#: of its evaluations; ``fast``: a quick CPU regime (partial inversion, 4 steps, 8 Adam iterations), about 10 times
#: quicker (``make demo`` runs it); ``recipe``: the public recipe (full inversion, 50 steps, 50 momentum iterations);
#: ``few-step``: :data:`FEW_STEP`, full inversion at the length step-distilled models are trained for (Flux.1
#: schnell: 1-4 steps), a fifth of the default's evaluations (docs/models.md), with a smaller step.
PRESETS = {"default": {},
           "fast": dict(steps=4, strength=0.35, iterations=8, optimizer="adam"),
           "recipe": dict(steps=50, strength=1.0, iterations=50, optimizer="momentum"),
           "few-step": FEW_STEP}
PRESET_HELP = {"default": "full inversion, 20 steps, 20 momentum iterations",
               "fast": "4 steps at strength 0.35, 8 Adam iterations: about 10 times quicker, for CPUs",
               "recipe": "the public recipe: 50 steps, 50 iterations",
               "few-step": f"for step-distilled models (Flux.1 schnell, LCM, Turbo): {FEW_STEP['steps']} steps of "
                           f"full inversion, a fifth of the default's evaluations, learning rate {FEW_STEP['lr']:g} "
                           "(the default step overshoots there)"}


def preset(name: str = "default", **overrides) -> MapSettings:
    """:class:`MapSettings` from a preset, with ``overrides`` (``None`` values leave the preset's)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return MapSettings(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
