"""Node inputs generated from the settings metadata (:mod:`iqa_map.core.map.settings`), and read back.

A node lays out the settings it shows (which are required, in which order:
saved workflows store widget values by position); any other setting that the
metadata places on the node is appended after the optional ones, so an option
added to the settings reaches the node with that one edit and never moves an
existing widget.
"""
from __future__ import annotations

import dataclasses
import typing

from ..core.map import settings as S
from .schema import Input

_WIDGETS = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "COMBO"}


def _fields(node_key: str, cls=S.MapSettings) -> dict:
    """``{input name: (field, option)}`` of the settings the metadata puts on ``node_key``, in declaration order."""
    return {opt.node[1]: (f, opt) for f, opt in S.options(cls) if opt.node and opt.node[0] == node_key}


def _input(cls, name: str, f: dataclasses.Field, opt: S.Option, optional: bool) -> Input:
    kind = _WIDGETS[S.value_type(cls, f)]
    if kind == "COMBO" and opt.choices is None:
        kind = "STRING"  # free text (a list of names)
    default = opt.unset if f.default is None else f.default
    tooltip = opt.help[0].upper() + opt.help[1:] + "."
    if opt.unset is not None:
        tooltip += f" {opt.unset} = {opt.unset_help}."
    kw = {}
    if kind == "COMBO":
        kw["options"] = ([opt.unset] if isinstance(opt.unset, str) else []) + list(opt.choices)
    elif kind in ("INT", "FLOAT") and opt.range is not None:
        lo, hi = opt.range
        if opt.unset is not None and lo is not None and opt.unset < lo:
            lo = opt.unset
        kw.update(min=lo, max=hi)
        if opt.step is not None:
            kw["step"] = opt.step
    return Input(name, kind, tooltip, optional=optional, default=default, advanced=opt.advanced, **kw)


def settings_inputs(node_key: str, required: typing.Sequence[str], optional: typing.Sequence[str] = (),
                    cls=S.MapSettings) -> tuple[list[Input], list[Input]]:
    """(required inputs, optional inputs) for the settings on ``node_key``, by their input names;
    settings on the node that neither list names come last among the optional ones."""
    fields = _fields(node_key, cls)
    unknown = [n for n in (*required, *optional) if n not in fields]
    if unknown:
        raise ValueError(f"{node_key}: no setting is placed on the node as {unknown}")
    rest = [n for n in fields if n not in required and n not in optional]
    return ([_input(cls, n, *fields[n], optional=False) for n in required],
            [_input(cls, n, *fields[n], optional=True) for n in (*optional, *rest)])


def settings_from_inputs(node_key: str, values: dict, cls=S.MapSettings, base=None, prefix: str = ""):
    """The settings record from a node's input values (each widget's ``unset`` value meaning ``None``), on top of
    ``base`` (default: the library's defaults), validated; a bad value is named by its input (after ``prefix``,
    e.g. the node's name)."""
    fields = _fields(node_key, cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"{node_key} has no input {', '.join(unknown)}")
    given = {}
    for name, value in values.items():
        f, opt = fields[name]
        given[f.name] = None if opt.unset is not None and value == opt.unset else value
    try:
        record = dataclasses.replace(base, **given) if base is not None else cls(**given)
        record.validate()
    except S.SettingsError as e:
        raise ValueError(prefix + S.renamed(str(e), {f.name: n for n, (f, _) in fields.items()})) from None
    return record
