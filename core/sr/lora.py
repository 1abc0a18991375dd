"""LoRA adapters on an SR model's conv and linear layers through ``peft``, merged into a plain model.

The base is deep-copied first: a model that ComfyUI (or the caller) holds is never changed.
Depthwise and other grouped convolutions stay frozen (peft cannot merge their adapters into
a plain weight, and the export must be the base architecture), as do normalisation layers. The model is
trained in eval mode: batch-norm statistics and dropout stay as the base was trained.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

#: Which layer kinds take adapters.
TARGET_KINDS = ("conv+linear", "conv", "linear")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float | None = None     # None: alpha = rank (scale 1)
    targets: str = "conv+linear"
    include: str | None = None     # optional regex on layer names that must match
    exclude: str | None = None     # optional regex on layer names to leave frozen

    def validate(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1; got {self.rank}")
        if self.targets not in TARGET_KINDS:
            raise ValueError(f"unknown LoRA targets {self.targets!r}; choose from {', '.join(TARGET_KINDS)}")


def target_layers(module: torch.nn.Module, spec: LoraSpec) -> list[str]:
    """Names of the layers that take an adapter under ``spec``."""
    spec.validate()
    kinds = ()
    if "conv" in spec.targets:
        kinds += (torch.nn.Conv2d,)
    if "linear" in spec.targets:
        kinds += (torch.nn.Linear,)
    names = []
    for name, m in module.named_modules():
        if not name or not isinstance(m, kinds):
            continue
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            continue  # peft cannot merge a grouped (e.g. depthwise) conv's adapter into the weight
        if spec.include and not re.search(spec.include, name):
            continue
        if spec.exclude and re.search(spec.exclude, name):
            continue
        names.append(name)
    return names


def _quiet_peft():
    """peft logs a missing optional kernel package on import; that is noise for a conv model."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            import peft
        finally:
            logging.disable(logging.NOTSET)
    return peft


def add_lora(module: torch.nn.Module, spec: LoraSpec = LoraSpec()):
    """A deep copy of ``module`` with LoRA adapters (``peft.LoraModel``); at initialisation it computes exactly
    what the base does (peft's B = 0). Only the adapters require gradients."""
    peft = _quiet_peft()
    names = target_layers(module, spec)
    if not names:
        raise ValueError(f"no layer of {type(module).__name__} can take a LoRA adapter with targets "
                         f"{spec.targets!r} and rank {spec.rank}")
    cfg = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha if spec.alpha is not None else spec.rank,
                          target_modules=_exact(names),
                          lora_dropout=0.0, init_lora_weights=True)
    model = peft.LoraModel(copy.deepcopy(module).eval(), cfg, "default")
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model.eval()


def _exact(names: list[str]) -> str:
    # peft matches a string target_modules as a full-name regex: one alternation of the exact names.
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def lora_state_dict(model) -> dict[str, torch.Tensor]:
    """The adapters alone (small): names as peft keeps them without the adapter name."""
    return {k.replace(".default", ""): v.detach().cpu().clone()
            for k, v in model.state_dict().items() if "lora_" in k}


def load_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`lora_state_dict` gave into a model from :func:`add_lora` of the same base and spec."""
    own = {k.replace(".default", ""): k for k in model.state_dict() if "lora_" in k}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"the LoRA does not fit this base: {len(missing)} adapter tensors missing "
                         f"(e.g. {missing[:2]}), {len(extra)} unknown (e.g. {extra[:2]}); was it trained "
                         "on the same model with the same rank and targets?")
    model.load_state_dict({own[k]: v for k, v in state.items()}, strict=False)


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The base's own state dict (its original names) with every adapter folded into its weight; ``model``
    itself is untouched (a merge then unmerge would not restore its weights bit for bit)."""
    merged = copy.deepcopy(model).merge_and_unload()
    return {k: v.detach().cpu().clone() for k, v in merged.state_dict().items()}


def base_module(model) -> torch.nn.Module:
    """The wrapped module (adapters inside); what the training loop calls."""
    return model.model
