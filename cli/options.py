"""argparse options generated from the settings records (:mod:`iqa_map.core.options`), and read back.

Every generated option defaults to "not given" (``argparse.SUPPRESS``), so the
settings are the record's defaults (or a preset's) with what the command line
gives on top, and the library's defaults stay the only defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib

from ..core import options as O
from ..core.map import settings as S

flag_of = O.flag_of  # the flag naming a field, for messages


def titles_of(cls) -> dict:
    """The option groups' titles of a settings record: the ``GROUPS`` declared beside it."""
    return importlib.import_module(cls.__module__).GROUPS


def _help(opt: O.Option, default, preset_keys) -> str:
    text = opt.help
    if opt.choices and opt.open_choices:
        text += f" (e.g. {', '.join(opt.choices)})"
    if default is None:
        text += f"; default: {opt.unset_help or 'none'}" if opt.unset_help else ""
    elif isinstance(default, bool):
        text += f" (default: {'on' if default else 'off'})"
    else:
        by_preset = ", or the preset's" if preset_keys else ""
        text += f" (default {default}{by_preset})"
    return text.replace("%", "%%")


def add_settings(p: argparse.ArgumentParser, cls, groups=None, titles=None, presets=None) -> None:
    """Add one option per field of the settings record ``cls`` that has a flag, under argparse groups titled by
    ``titles`` (default: the record's own ``GROUPS``); ``groups`` restricts which; ``presets`` (name -> fields,
    default none) say which defaults a preset may change."""
    titles = titles_of(cls) if titles is None else titles
    in_presets = {k for p_ in (presets or {}).values() for k in p_}
    sections = {}
    for f, opt in O.options(cls):
        flag = O.cli_flag(f, opt)
        if flag is None or (groups is not None and opt.group not in groups):
            continue
        if opt.group not in sections:
            sections[opt.group] = p.add_argument_group(titles[opt.group])
        kind = O.value_type(cls, f)
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=_help(opt, f.default, f.name in in_presets))
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = kind
            kw["metavar"] = opt.metavar
            if opt.choices and not opt.open_choices and opt.metavar is None:
                kw["choices"] = list(opt.choices)
            if opt.cli_const is not None:
                kw.update(nargs="?", const=opt.cli_const)
        sections[opt.group].add_argument(flag, **kw)


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` that the command line gave."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def settings(args: argparse.Namespace, cls, **fixed):
    """The record ``cls`` from its defaults, the options given and ``fixed`` on top, validated (a bad value is
    named by its flag)."""
    return _checked(cls, lambda: cls(**{**given(args, cls), **fixed}))


def map_settings(args: argparse.Namespace) -> S.MapSettings:
    """:class:`MapSettings` from ``--preset`` and the options given; ``--fidelity NAME:WEIGHT`` sets both."""
    chosen = given(args, S.MapSettings)
    fid = chosen.get("fidelity")
    if fid and ":" in fid:
        name, _, w = fid.rpartition(":")
        try:
            weight = float(w)
        except ValueError:
            raise ValueError(f"--fidelity {fid}: the weight after ':' must be a number") from None
        if "fidelity_weight" in chosen and chosen["fidelity_weight"] != weight:
            raise ValueError(f"--fidelity {fid} and --fidelity-weight {chosen['fidelity_weight']} disagree: give one")
        chosen.update(fidelity=name, fidelity_weight=weight)
    return _checked(S.MapSettings, lambda: S.preset(getattr(args, "preset", "default"), **chosen))


def sr_settings(args: argparse.Namespace, prior_given: bool):
    """:class:`~iqa_map.core.sr.SRSettings` from the options given; without a prior the IQA term is off."""
    from ..core.sr import SRSettings

    return settings(args, SRSettings, **({} if prior_given else dict(iqa_weight=0.0, iqa_ratio=0.0)))


def tile_settings(args: argparse.Namespace) -> S.TileSettings:
    return settings(args, S.TileSettings)


def _checked(cls, make):
    """Build and validate settings, naming a bad one by its flag."""
    try:
        record = make()
        record.validate()
    except O.SettingsError as e:
        raise ValueError(O.renamed(str(e), {f.name: flag_of(cls, f.name) for f in dataclasses.fields(cls)})) from None
    return record
