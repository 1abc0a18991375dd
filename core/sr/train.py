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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..io.files import atomic_path
from ..runtime import Interrupted
from .data import PairSampler
from .guard import GREY, HeldOut, JudgeGuard, balanced_gradient, periodic_energy
from .lora import add_lora, lora_state_dict, merged_state_dict
from .model import state_sha256
from .settings import SRSettings

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
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _same_run(saved: dict, now: dict) -> list[str]:
    keys = [k for k in now if k not in ("steps", "checkpoint_every")]
    return [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now" for k in keys if saved.get(k) != now[k]]


def _judges(s: SRSettings, prior, device) -> dict:
    from ..priors import load

    out = {}
    for name in s.judge_names():
        if name == "prior":
            if prior is not None:
                out[getattr(prior, "name", "prior")] = prior
        else:
            out[name] = load(name, device=device)
    return out


def finetune(base, sampler: PairSampler, prior=None, settings: SRSettings | None = None, *, checkpoint=None,
             resume: bool = False, callback=None, device=None, base_hash: str | None = None,
             judges: dict | None = None) -> SRResult:
    """Fine-tune ``base`` (a spandrel descriptor) on ``sampler``'s batches; ``prior`` gives Q (needed when the IQA
    term is on). ``checkpoint``: a file written every ``checkpoint_every`` steps and at the end (and on an
    interrupt); with ``resume`` an existing one is continued exactly. ``judges`` (name -> prior): the held-out
    judges, default those ``settings.judges`` names. ``callback(info)`` after each step (``info``: step, steps,
    loss terms, q, ``preview``: the step's first SR crop, ``eval``: a held-out evaluation when one ran) may raise
    :class:`Interrupted` to stop."""
    from ..map.objective import SmoothNLPD
    from ..priors.base import comparable_score

    s = settings or SRSettings()
    s.validate()
    if bool(s.quality_weight_prior) != (getattr(sampler, "weight_prior", None) is not None):
        raise ValueError("quality_weight_prior is set in the settings but the sampler has no weight_prior, or "
                         "the other way round: give both (finetune_upscaler does)")
    if s.iqa_on and prior is None:
        raise ValueError("the IQA term (iqa_ratio, or iqa_weight with balance off) needs a prior (the Q in "
                         "L1 - lQ * Q); set it to 0 for L1 only")
    dev = torch.device(device) if device else next(base.model.parameters()).device
    torch.manual_seed(s.seed)  # peft's adapter initialisation (A is random) and the discriminator's
    if s.train == "lora":
        lora = add_lora(base.model, s.lora_spec())
        module = lora.model
    else:
        lora, module = None, copy.deepcopy(base.model).eval().requires_grad_(True)
    module.to(dev).eval()
    frozen = copy.deepcopy(base.model).to(dev).eval().requires_grad_(False)  # the base's own outputs
    params = _trainable(module)
    opt = torch.optim.Adam(params.values(), lr=s.lr)
    disc = dopt = None
    if s.adversarial_weight > 0:
        disc = Discriminator().to(dev)
        dopt = torch.optim.Adam(disc.parameters(), lr=s.lr, betas=(0.5, 0.999))
    nlpd = SmoothNLPD().to(dev) if s.perceptual_weight > 0 else None
    judges = _judges(s, prior, dev) if judges is None else judges
    guard = held = None
    if judges:
        lr_h, hr_h, from_training = sampler.holdout_crops()
        held = HeldOut(lr_h.to(dev), hr_h.to(dev), frozen, judges, base.scale, from_training)
        guard = JudgeGuard(s.judge_every, s.patience, s.max_grid, s.max_psnr_drop)
    record = {**asdict(s), "base": base_hash, "architecture": type(base.architecture).__name__,
              "scale": base.scale, "prior": getattr(prior, "name", None),
              "trainable_parameters": sum(p.numel() for p in params.values()),
              "base_parameters": sum(p.numel() for p in base.model.parameters()),
              "base_state_sha256": state_sha256(base.model.state_dict()), "judge_names": sorted(judges)}
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
        if guard is not None:
            guard.load_state(state["guard"])
        history, start = state["history"], state["step"]
        torch.set_rng_state(state["torch_rng"])

    def save(step, sampler_state=None):
        if ckpt is None:
            return
        _save_atomic({"step": step, "record": record, "history": history,
                      "sampler": sampler_state or sampler.state(),
                      "trainable": {n: p.detach().cpu() for n, p in params.items()},
                      "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                      **({"guard": guard.state()} if guard is not None else {}),
                      **({"disc": disc.state_dict(), "disc_opt": dopt.state_dict()} if disc is not None else {})},
                     ckpt)

    def judge(step) -> bool:
        """Evaluate on the held-out crops once per due step; True: the guard stops the run."""
        if guard is None or (guard.curve and guard.curve[-1]["step"] >= step):
            return False
        entry = held.evaluate(module, step)
        stop = guard.update(entry, params)
        last_eval[0] = guard.curve[-1]
        return stop

    last_eval = [None]
    t0 = time.perf_counter()
    step = start
    try:
        for step in range(start, s.steps):
            before = sampler.state()  # an interrupt inside a step saves the state the step started from
            if (guard is not None and guard.stopped) or (guard is not None and guard.due(step) and judge(step)):
                break
            lr_img, hr, weight = sampler.next()
            lr_img, hr = lr_img.to(dev), hr.to(dev)
            sr = module(lr_img)
            if weight is None:
                terms = {"l1": F.l1_loss(sr, hr)}
            else:  # quality-weighted L1 (AdaQual-Diff's w(q)): the weight has mean 1 over each photo
                terms = {"l1": ((sr - hr).abs() * weight.to(dev)).mean()}
            fid = s.l1_weight * terms["l1"]
            if nlpd is not None:
                terms["nlpd"] = nlpd(sr.clamp(0, 1), hr).mean()
                fid = fid + s.perceptual_weight * terms["nlpd"]
            other = torch.zeros((), device=dev)
            if disc is not None:
                terms["adv"] = F.softplus(-disc(sr)).mean()  # non-saturating generator loss
                other = other + s.adversarial_weight * terms["adv"]
            if s.grid_weight > 0 or s.trust_weight > 0:
                with torch.no_grad():
                    base_out = frozen(lr_img)
                change = sr - base_out
                if s.grid_weight > 0:
                    terms["grid"] = periodic_energy(change, base.scale).mean()
                    other = other + s.grid_weight * terms["grid"]
                if s.trust_weight > 0:
                    terms["trust"] = change.pow(2).mean() * GREY ** 2
                    other = other + s.trust_weight * terms["trust"]
            q = None
            if prior is not None:
                with torch.set_grad_enabled(s.iqa_on):
                    q = comparable_score(prior, sr.clamp(0, 1)).mean()
            opt.zero_grad(set_to_none=True)
            if s.iqa_on and s.balance:
                g_f, = torch.autograd.grad(fid, sr, retain_graph=True)
                g_q, = torch.autograd.grad(q, sr, retain_graph=True)
                push = balanced_gradient(g_f, g_q, s.iqa_ratio)
                terms["iqa_scale"] = push.norm() / g_q.norm().clamp_min(1e-30)  # the lQ this step used
                loss = fid + other - terms["iqa_scale"] * q
                g_rest, = torch.autograd.grad(fid + other, sr, retain_graph=True)
                sr.backward(g_rest - push)
            else:
                loss = fid + other - (s.iqa_weight * q if s.iqa_on else 0)
                loss.backward()
            if not all(torch.isfinite(p.grad).all() for p in params.values() if p.grad is not None):
                raise FloatingPointError(f"non-finite gradient at step {step + 1}; lower the learning rate "
                                         f"({s.lr}) or the IQA weight")
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
            info = {**info, "preview": sr.detach()[:1].clamp(0, 1), "eval": last_eval[0]}  # not for the history
            last_eval[0] = None
            if ckpt is not None and s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
                save(step + 1)
            if callback is not None:
                callback(info)
        if guard is not None and not guard.stopped:
            before = sampler.state()
            judge(len(history))  # the last step's weights are a candidate too
    except (Interrupted, KeyboardInterrupt):
        # the weights change only in opt.step(), right before the history entry: a step without its entry
        # left them as they were, and its batch is drawn again on resume
        save(len(history), None if len(history) == step + 1 else before)
        raise
    save(len(history))
    record["wall_seconds"] = time.perf_counter() - t0
    record["picked"] = sampler.picked.tolist()
    if guard is not None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(guard.best_weights[n])
        record["guard"] = {**guard.report(), "holdout_from_training": held.from_training,
                           "holdout_crops": int(held.lr.shape[0])}
    if sampler.skipped:
        record["skipped_photos"] = sampler.skipped
    return SRResult(module, lora, base.scale, history, record)
