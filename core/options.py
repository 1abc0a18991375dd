"""Settings as data: the metadata one option carries, read by the library, the CLI and the nodes.

A settings record (``MapSettings``, ``TileSettings``, ``SRSettings``, ...) is a dataclass whose fields are
declared with :func:`option`: the default, its help, group, choices, range, whether it is advanced, and how
it is named on the command line and on a node (or why it is library-only there). ``cli/options.py`` builds the
argparse options from it, ``nodes/settings_inputs.py`` the node inputs, and :func:`check` validates a record's
choices and ranges from it, so adding an option is one edit where the record is declared.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional


@dataclasses.dataclass(frozen=True)
class Option:
    """What the surfaces need to know about one setting.

    ``cli``: the option's flag (default ``--`` + the name with dashes), ``None`` = library-only there.
    ``node``: ``(node key, input name)`` on a node, ``None`` = library-only there (``why`` says why).
    ``unset``: the widget value standing for ``None`` on a node.
    ``open_choices``: ``choices`` are suggestions (the node's list), the library accepts other values.
    ``cli_const``: the value of a flag given without one (argparse ``nargs="?"``).
    """
    help: str
    group: str
    choices: Optional[tuple] = None
    range: Optional[tuple] = None      # (min, max), inclusive; None: unbounded
    step: Optional[float] = None       # widget step
    advanced: bool = False
    cli: Optional[str] = ""
    node: Optional[tuple] = None
    unset: Any = None
    unset_help: str = ""
    open_choices: bool = False
    cli_const: Any = None
    metavar: Optional[str] = None
    why: str = ""                      # why the option is library-only somewhere


def option(default, help: str, group: str, **kw):
    """A dataclass field with its :class:`Option`."""
    return dataclasses.field(default=default, metadata={"option": Option(help, group, **kw)})


def options(cls) -> Iterator[tuple[dataclasses.Field, Option]]:
    """The fields of a settings record with their options, in declaration order."""
    for f in dataclasses.fields(cls):
        yield f, f.metadata["option"]


def value_type(cls, f: dataclasses.Field) -> type:
    """The Python type a field holds (``Optional[float]`` -> float), for the surfaces that render it."""
    import typing

    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def cli_flag(f: dataclasses.Field, opt: Option) -> Optional[str]:
    return None if opt.cli is None else (opt.cli or "--" + f.name.replace("_", "-"))


def flag_of(cls, name: str) -> str:
    """The command-line flag of field ``name`` of ``cls``; the field's name where it is library-only there."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return cli_flag(f, f.metadata["option"]) or name


class SettingsError(ValueError):
    """A setting out of its choices or range; ``field`` names it, so each surface can say its own name for it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def renamed(message: str, names: dict) -> str:
    """``message`` with each field name (a whole word) replaced by a surface's name for it (a flag, an input)."""
    import re

    for field in sorted(names, key=len, reverse=True):
        message = re.sub(rf"(?<![\w-]){re.escape(field)}(?![\w-])", names[field], message)
    return message


def check(record) -> None:
    """Every field of a settings record against its choices and range (``None`` passes where allowed)."""
    for f, opt in options(type(record)):
        v = getattr(record, f.name)
        if v is None:
            continue
        if opt.choices is not None and not opt.open_choices and v not in opt.choices:
            raise SettingsError(f.name, f"{f.name} must be one of {', '.join(map(str, opt.choices))}; got {v!r}")
        if opt.range is not None:
            lo, hi = opt.range
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise SettingsError(f.name, f"{f.name} must be between {lo:g} and {hi:g}; got {v!r}")


#: Every settings record -> the ``iqa-map`` commands that take its options (empty: node-only), filled by
#: :func:`record` where each is declared; the settings test checks every record on both surfaces from it.
RECORDS: dict = {}


def record(*commands: str):
    """Class decorator registering a settings record and the commands whose options it generates."""
    def register(cls):
        RECORDS[cls] = commands
        return cls
    return register
