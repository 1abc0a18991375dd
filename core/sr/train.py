"""IQA-regularised fine-tuning of an SR model: ``L = l1 L1 + lP NLPD + lA adv - lQ Q(SR)``.

Only LoRA adapters train by default (``train="lora"``), which the perceptual SR work found
limits metric hacking; ``train="all"`` fine-tunes every weight (the comparison). The
perceptual term is NLPD (Laparra et al. 2016): weight-free, so it works offline where no
VGG/LPIPS weights exist, differentiable, and fitted to human judgements of distortion;
it is the project's MAP fidelity term as well. The model runs in eval mode throughout
(batch-norm statistics and dropout as the base was trained). Checkpoints hold the
trainable weights, the optimisers, the data generator and the history: a resumed run
gives bit-for-bit what an uninterrupted one gives.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import DEGRADATIONS, SELECTIONS, PairSampler
from .lora import LoraSpec, add_lora, lora_state_dict, merged_state_dict
from .model import state_sha256

TRAIN_MODES = ("lora", "all")


@dataclass
class SRSettings:
    steps: int = 150
    batch: int = 4
    crop: int = 64               # LR crop side; the target crop is crop * scale
    lr: float = 2e-4
    train: str = "lora"
    rank: int = 3
    alpha: float | None = None
    targets: str = "conv+linear"
    exclude: str | None = None       # regex of layer names left without adapters (e.g. "^upsampler")
    l1_weight: float = 1.0
    perceptual_weight: float = 0.0   # NLPD
    adversarial_weight: float = 0.0
    iqa_weight: float = 0.0005       # per calibrated point of Q
    selection: str = "orig"
    temperature: float = 5.0         # calibrated points
    degradation: str = "bicubic"
    quality_weight_prior: str | None = None  # AdaQual-Diff's quality-weighted L1 from this prior's map of the LR
    quality_floor: float = 0.1               # weight of the best region relative to the worst
    seed: int = 0
    checkpoint_every: int = 50

    def validate(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.crop < 8:
            raise ValueError(f"steps and batch must be at least 1 and crop at least 8; got steps={self.steps}, "
                             f"batch={self.batch}, crop={self.crop}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"unknown train mode {self.train!r}; choose from {', '.join(TRAIN_MODES)}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose from {', '.join(SELECTIONS)}")
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}; choose from {', '.join(DEGRADATIONS)}")
        if not 0 < self.quality_floor <= 1:
            raise ValueError(f"quality_floor must be in (0, 1]; got {self.quality_floor}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError("temperature and lr must be > 0")
        if min(self.l1_weight, self.perceptual_weight, self.adversarial_weight, self.iqa_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        self.lora_spec().validate()

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(rank=self.rank, alpha=self.alpha, targets=self.targets, exclude=self.exclude)


class Discriminator(torch.nn.Module):
    """A small patch discriminator (4 strided convs, spectral norm) for the optional adversarial term."""

    def __init__(self, width: int = 32):
        super().__init__()
        sn = torch.nn.utils.spectral_norm
        layers, c = [], 3
        for i, w in enumerate((width, width * 2, width * 4, width * 4)):
            layers += [sn(torch.nn.Conv2d(c, w, 4, 2 if i < 3 else 1, 1)), torch.nn.LeakyReLU(0.2)]
            c = w
        layers.append(sn(torch.nn.Conv2d(c, 1, 3, 1, 1)))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x * 2 - 1)


class Interrupted(RuntimeError):
    """Raised by a callback to stop; the checkpoint of the last finished step is written first."""


@dataclass
class SRResult:
    model: torch.nn.Module          # the trained module (LoRA adapters inside for train="lora")
    lora: object | None             # the peft LoraModel, or None for train="all"
    scale: int
    history: list = field(default_factory=list)
    record: dict = field(default_factory=dict)

    def merged_state_dict(self) -> dict:
        """The base architecture's state dict with the adapters folded in (what spandrel loads)."""
        if self.lora is not None:
            return merged_state_dict(self.lora)
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def lora_state_dict(self) -> dict:
        if self.lora is None:
            raise ValueError("this run trained all weights (train='all'): there is no LoRA to save alone")
        return lora_state_dict(self.lora)


def _trainable(module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _same_run(saved: dict, now: dict) -> list[str]:
    keys = [k for k in now if k not in ("steps", "checkpoint_every")]
    return [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now" for k in keys if saved.get(k) != now[k]]


def finetune(base, sampler: PairSampler, prior=None, settings: SRSettings | None = None, *, checkpoint=None,
             resume: bool = False, callback=None, device=None, base_hash: str | None = None) -> SRResult:
    """Fine-tune ``base`` (a spandrel descriptor) on ``sampler``'s batches; ``prior`` gives Q (needed when
    ``iqa_weight > 0``). ``checkpoint``: a file written every ``checkpoint_every`` steps and at the end (and
    on an interrupt); with ``resume`` an existing one is continued exactly. ``callback(info)`` after each step
    (``info``: step, steps, loss terms, q, and ``preview``: the step's first SR crop) may raise :class:`Interrupted` to stop."""
    from ..objective import SmoothNLPD
    from ..priors.base import comparable_score

    s = settings or SRSettings()
    s.validate()
    if bool(s.quality_weight_prior) != (getattr(sampler, "weight_prior", None) is not None):
        raise ValueError("quality_weight_prior is set in the settings but the sampler has no weight_prior, or "
                         "the other way round: give both (finetune_upscaler does)")
    if s.iqa_weight > 0 and prior is None:
        raise ValueError("iqa_weight > 0 needs a prior (the Q in L1 - lQ * Q)")
    dev = torch.device(device) if device else next(base.model.parameters()).device
    torch.manual_seed(s.seed)  # peft's adapter initialisation (A is random) and the discriminator's
    if s.train == "lora":
        lora = add_lora(base.model, s.lora_spec())
        module = lora.model
    else:
        lora, module = None, copy.deepcopy(base.model).eval().requires_grad_(True)
    module.to(dev).eval()
    params = _trainable(module)
    opt = torch.optim.Adam(params.values(), lr=s.lr)
    disc = dopt = None
    if s.adversarial_weight > 0:
        disc = Discriminator().to(dev)
        dopt = torch.optim.Adam(disc.parameters(), lr=s.lr, betas=(0.5, 0.999))
    nlpd = SmoothNLPD().to(dev) if s.perceptual_weight > 0 else None
    record = {**asdict(s), "base": base_hash, "architecture": type(base.architecture).__name__,
              "scale": base.scale, "prior": getattr(prior, "name", None),
              "trainable_parameters": sum(p.numel() for p in params.values()),
              "base_parameters": sum(p.numel() for p in base.model.parameters()),
              "base_state_sha256": state_sha256(base.model.state_dict())}
    history, start = [], 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        bad = _same_run(state["record"], record)
        if bad:
            raise ValueError(f"checkpoint {ckpt} is of another run ({'; '.join(bad)}); use another checkpoint "
                             "path or the same settings")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["trainable"][n])
        opt.load_state_dict(state["optimizer"])
        sampler.load_state(state["sampler"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            dopt.load_state_dict(state["disc_opt"])
        history, start = state["history"], state["step"]
        torch.set_rng_state(state["torch_rng"])

    def save(step, sampler_state=None):
        if ckpt is None:
            return
        _save_atomic({"step": step, "record": record, "history": history,
                      "sampler": sampler_state or sampler.state(),
                      "trainable": {n: p.detach().cpu() for n, p in params.items()},
                      "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                      **({"disc": disc.state_dict(), "disc_opt": dopt.state_dict()} if disc is not None else {})},
                     ckpt)

    t0 = time.perf_counter()
    step = start
    try:
        for step in range(start, s.steps):
            before = sampler.state()  # an interrupt inside a step saves the state the step started from
            lr_img, hr, weight = sampler.next()
            lr_img, hr = lr_img.to(dev), hr.to(dev)
            sr = module(lr_img)
            if weight is None:
                terms = {"l1": F.l1_loss(sr, hr)}
            else:  # quality-weighted L1 (AdaQual-Diff's w(q)): the weight has mean 1 over each photo
                terms = {"l1": ((sr - hr).abs() * weight.to(dev)).mean()}
            loss = s.l1_weight * terms["l1"]
            if nlpd is not None:
                terms["nlpd"] = nlpd(sr.clamp(0, 1), hr).mean()
                loss = loss + s.perceptual_weight * terms["nlpd"]
            if disc is not None:
                terms["adv"] = F.softplus(-disc(sr)).mean()  # non-saturating generator loss
                loss = loss + s.adversarial_weight * terms["adv"]
            q = None
            if prior is not None:
                with torch.set_grad_enabled(s.iqa_weight > 0):
                    q = comparable_score(prior, sr.clamp(0, 1)).mean()
                if s.iqa_weight > 0:
                    loss = loss - s.iqa_weight * q
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None):
                raise FloatingPointError(f"non-finite gradient at step {step + 1}; lower the learning rate "
                                         f"({s.lr}) or the IQA weight ({s.iqa_weight})")
            opt.step()
            if disc is not None:
                d_loss = F.softplus(-disc(hr)).mean() + F.softplus(disc(sr.detach())).mean()
                dopt.zero_grad(set_to_none=True)
                d_loss.backward()
                dopt.step()
                terms["disc"] = d_loss
            info = {"step": step + 1, "steps": s.steps, "loss": float(loss.detach()),
                    **{k: float(v.detach()) for k, v in terms.items()}, "q": None if q is None else float(q.detach())}
            history.append(info)
            info = {**info, "preview": sr.detach()[:1].clamp(0, 1)}  # for progress previews, not the history
            if ckpt is not None and s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
                save(step + 1)
            if callback is not None:
                callback(info)
    except (Interrupted, KeyboardInterrupt):
        # the weights change only in opt.step(), right before the history entry: a step without its entry
        # left them as they were, and its batch is drawn again on resume
        save(len(history), None if len(history) == step + 1 else before)
        raise
    save(len(history))
    record["wall_seconds"] = time.perf_counter() - t0
    record["picked"] = sampler.picked.tolist()
    if sampler.skipped:
        record["skipped_photos"] = sampler.skipped
    return SRResult(module, lora, base.scale, history, record)
