"""argparse options generated from the settings' metadata (:mod:`iqa_map.core.map.settings`), and read back.

Every generated option defaults to "not given" (``argparse.SUPPRESS``), so the
settings are the preset's with what the command line gives on top, and the
library's defaults stay the only defaults.
"""
from __future__ import annotations

import argparse
import dataclasses

from ..core.map import settings as S


def _help(opt: S.Option, default, preset_keys) -> str:
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


def add_settings(p: argparse.ArgumentParser, cls, groups=None, advanced: bool = True, titles=None,
                 presets=None) -> None:
    """Add one option per field of ``cls`` (:class:`~iqa_map.core.map.settings.MapSettings`, ``TileSettings`` or
    ``SRSettings``), under argparse groups named as ``titles`` (default :data:`~iqa_map.core.map.settings.GROUPS`);
    ``groups`` restricts which; ``presets`` (default MapSettings') say which defaults a preset may change."""
    titles = S.GROUPS if titles is None else titles
    in_presets = {k for p_ in (S.PRESETS if presets is None else presets).values() for k in p_}
    sections = {}
    for f, opt in S.options(cls):
        flag = S.cli_flag(f, opt)
        if flag is None or (groups is not None and opt.group not in groups):
            continue
        if opt.group not in sections:
            sections[opt.group] = p.add_argument_group(titles[opt.group])
        kind = S.value_type(cls, f)
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


def flag_of(cls, field: str) -> str:
    f = next(f for f in dataclasses.fields(cls) if f.name == field)
    return S.cli_flag(f, f.metadata["option"]) or field


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

    chosen = given(args, SRSettings)
    if not prior_given:
        chosen.update(iqa_weight=0.0, iqa_ratio=0.0)
    return _checked(SRSettings, lambda: SRSettings(**chosen))


def tile_settings(args: argparse.Namespace) -> S.TileSettings:
    return _checked(S.TileSettings, lambda: S.TileSettings(**given(args, S.TileSettings)))


def _checked(cls, make):
    """Build and validate settings, naming a bad one by its flag."""
    try:
        record = make()
        record.validate()
    except S.SettingsError as e:
        raise ValueError(S.renamed(str(e), {f.name: flag_of(cls, f.name) for f in dataclasses.fields(cls)})) from None
    return record
