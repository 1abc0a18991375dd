"""SR fine-tuning settings as data: one declaration per option, read by the library, ``iqa-map sr-finetune``
and the IQA Fine-tune Upscaler node (the :class:`~iqa_map.core.map.settings.Option` metadata of MapSettings).

One default for every base (issue 39): the hack guard is on (held-out judges with early stop and the
best checkpoint kept, the scale-periodic penalty, the IQA gradient balanced against fidelity's).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from ..options import check, option, record
from .data import DEGRADATIONS, SELECTIONS
from .lora import TARGET_KINDS, LoraSpec

TRAIN_MODES = ("lora", "all")
NODE = "IQAMAP_IQAFineTuneUpscaler"
#: Option groups of sr-finetune (and upscale's), in the order the help lists them.
GROUPS = {
    "sr_train": "Training",
    "sr_lora": "LoRA adapters",
    "sr_loss": "Loss terms",
    "sr_guard": "Hack guard (on by default; docs/sr.md)",
    "sr_target": "Training targets and inputs",
    "sr_run": "Checkpoints",
    "sr_tiles": "Tiling (large photos)",
}


@record("sr-finetune")
@dataclasses.dataclass
class SRSettings:
    # -- training
    steps: int = option(150, "Adam steps (the guard may stop earlier and keeps the best held-out step)", "sr_train",
                        range=(1, 100000), node=(NODE, "steps"))
    batch: int = option(4, "LR crops per step", "sr_train", range=(1, 64), node=(NODE, "batch"))
    crop: int = option(64, "LR crop side in pixels; the target crop is crop x scale (NIQE and its kind are noisy "
                       "under 256-pixel targets)", "sr_train", range=(8, 1024), node=(NODE, "crop"))
    lr: float = option(2e-4, "Adam learning rate", "sr_train", range=(1e-6, 1.0), step=1e-5, cli="--lr",
                       node=(NODE, "learning_rate"))
    train: str = option("lora", "lora: only adapters train and are merged at the end; all: every weight (more "
                        "capacity to hack the prior)", "sr_train", choices=TRAIN_MODES, advanced=True, node=None,
                        why="the node trains LoRA only")
    seed: int = option(0, "seed of the crops, flips and the adapters' initialisation", "sr_train",
                       range=(0, 0xFFFFFFFFFFFFFFFF), node=(NODE, "seed"))
    # -- LoRA
    rank: int = option(3, "LoRA rank (3 keeps the adapters under a tenth of a small upscaler)", "sr_lora",
                       range=(1, 256), cli="--lora-rank", node=(NODE, "rank"))
    alpha: Optional[float] = option(None, "LoRA alpha", "sr_lora", range=(0.0, 1e6), cli="--lora-alpha",
                                    unset_help="the rank (scale 1)", node=None, why="rarely changed")
    targets: str = option("conv+linear", "layer kinds that take adapters", "sr_lora", choices=TARGET_KINDS,
                          cli="--lora-targets", node=None, why="rarely changed")
    exclude: Optional[str] = option(None, "regex of layer names left without adapters (e.g. '^upsampler')",
                                    "sr_lora", cli="--lora-exclude", metavar="REGEX", node=None,
                                    why="architecture-specific")
    # -- loss
    l1_weight: float = option(1.0, "weight of L1 to the target", "sr_loss", range=(0.0, 1e6), node=None,
                              why="the IQA term is balanced against it")
    perceptual_weight: float = option(0.0, "weight of NLPD, a weight-free perceptual distance", "sr_loss",
                                      range=(0.0, 1e6), node=None, why="off by default")
    adversarial_weight: float = option(0.0, "weight of a small patch discriminator's loss (0: off)", "sr_loss",
                                       range=(0.0, 1e6), node=None, why="off by default")
    balance: bool = option(True, "balance the IQA term: its gradient at the output is scaled to iqa_ratio times "
                           "the fidelity gradient's norm, so one setting pushes alike on every base; off: the raw "
                           "-iqa_weight x Q", "sr_loss", node=(NODE, "balance"))
    iqa_ratio: float = option(0.5, "with balance on: the norm of the IQA push over the fidelity push's (0: L1 only)",
                              "sr_loss", range=(0.0, 100.0), step=0.05, node=(NODE, "iqa_ratio"))
    iqa_weight: float = option(0.0005, "with balance off: lQ per calibrated point of Q (0: L1 only)", "sr_loss",
                               range=(0.0, 1.0), step=0.0001, node=(NODE, "iqa_weight"))
    grid_weight: float = option(1.0, "penalty per squared grey level of the change's scale-periodic pattern (the "
                                "grid a pixel-shuffle upsampler draws); 0: off", "sr_guard", range=(0.0, 1e6),
                                step=0.1, node=(NODE, "grid_weight"))
    trust_weight: float = option(0.0, "optional trust region: penalty per squared grey level of mean squared "
                                 "distance to the base model's own output; 0: off", "sr_guard", range=(0.0, 1e6),
                                 step=0.001, node=(NODE, "trust_weight"))
    # -- held-out judge
    judges: str = option("prior,cnniqa-builtin", "held-out judges (comma list; 'prior' = the optimised prior on "
                         "held-out photos; scnn = S-CNN if its weights are in the weights folder), scored every "
                         "judge_every steps; empty: no judge, no early stop", "sr_guard", metavar="NAMES",
                         node=(NODE, "judges"))
    judge_every: int = option(25, "steps between held-out evaluations", "sr_guard", range=(1, 100000),
                              node=(NODE, "judge_every"))
    patience: int = option(2, "stop after this many evaluations without an admissible improvement (0: never "
                           "stop early; the best is still kept)", "sr_guard", range=(0, 1000),
                           node=(NODE, "patience"))
    holdout: int = option(8, "training photos held out for the judges (at most a third of them; none when "
                          "there are under 3: then fixed crops of the training photos are judged)", "sr_guard",
                          range=(0, 10000), node=(NODE, "holdout"))
    max_grid: float = option(0.15, "an evaluation whose change has a larger grid share (0-1) is not kept",
                             "sr_guard", range=(0.0, 1.0), step=0.01, node=(NODE, "max_grid"))
    max_psnr_drop: float = option(1.0, "an evaluation costing more PSNR-Y (dB) on the held-out crops is not kept",
                                  "sr_guard", range=(0.0, 100.0), step=0.1, node=(NODE, "max_psnr_drop"))
    # -- targets and inputs
    selection: str = option("orig", "training target: orig (the HR photo), random, sma (softmax of Q / T over "
                            "the candidates), smp (over those scoring at least the photo), amo (the best "
                            "candidate per crop)", "sr_target", choices=SELECTIONS, cli="--select",
                            node=(NODE, "selection"))
    temperature: float = option(5.0, "sma/smp softmax temperature, calibrated points", "sr_target",
                                range=(1e-6, 1e6), node=None, why="rarely changed")
    degradation: str = option("bicubic", "how LR inputs are made: bicubic, or mix (random blur, noise and JPEG "
                              "on top, as real low-resolution photos)", "sr_target", choices=DEGRADATIONS,
                              node=(NODE, "degradation"))
    quality_weight_prior: Optional[str] = option(
        None, "AdaQual-Diff's quality-weighted L1: weigh each pixel by w(q) of PRIOR's quality map of the LR input, "
        "damaged regions most", "sr_target", cli="--quality-weighted", cli_const="cnniqa-builtin", metavar="PRIOR",
        node=None, why="needs a quality map prior")
    quality_floor: float = option(0.1, "with --quality-weighted: the best region's weight relative to the worst",
                                  "sr_target", range=(1e-9, 1.0), node=None, why="see quality_weight_prior")
    # -- checkpoints
    checkpoint_every: int = option(50, "write <output>.ckpt every this many steps", "sr_run", range=(1, 100000),
                                   metavar="STEPS", node=None, why="the node keeps no checkpoint")

    def validate(self) -> None:
        check(self)  # a SettingsError (a ValueError) names the field; each surface renames it
        self.lora_spec().validate()

    @property
    def iqa_on(self) -> bool:
        return (self.iqa_ratio if self.balance else self.iqa_weight) > 0

    def judge_names(self) -> list[str]:
        return [j.strip() for j in self.judges.split(",") if j.strip()]

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(rank=self.rank, alpha=self.alpha, targets=self.targets, exclude=self.exclude)


def fields():
    """(field, option) of every setting, in declaration order."""
    from ..map.settings import options
    return list(options(SRSettings))


@record("upscale")
@dataclasses.dataclass
class UpscaleSettings:
    tile: int = option(512, "input tile side for large photos; 0 = never tile", "sr_tiles", range=(0, 1 << 16),
                       metavar="PIXELS", node=None, why="ComfyUI's Upscale Image (using Model) node upscales, tiled")
    overlap: int = option(32, "overlap of neighbouring tiles, blended", "sr_tiles", range=(0, 4096),
                          cli="--tile-overlap", metavar="PIXELS", node=None, why="see tile")

    def validate(self) -> None:
        check(self)
        if 0 < self.tile < 32:
            from ..options import SettingsError
            raise SettingsError("tile", f"tile must be 0 (never tile) or at least 32 pixels; got {self.tile}")
