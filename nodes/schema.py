"""What each node takes and returns, as data: one source for ComfyUI's V3 schema and for plain Python.

A node declares a :class:`Schema`; :func:`to_v3` renders it as
``io.Schema`` of the pinned ``comfy_api`` version when ComfyUI loads the pack (nodes/v3.py), and
:func:`legacy_input_types` as the V1 ``INPUT_TYPES`` dict that the tests,
``tools/make_workflows.py`` and the saved-workflow checks read without ComfyUI.
Saved workflows store widget values by position, so the order here is part of
the interface: required inputs first, then optional ones, each in list order
(how ComfyUI itself lays out a node's inputs).

Nothing here imports ComfyUI at module level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

#: Input types ComfyUI shows as widgets (the others are sockets).
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

Choices = Union[Sequence[Any], Callable[[], Sequence[Any]]]


@dataclass(frozen=True)
class Input:
    """One input. ``options`` (COMBO only) may be a callable, read at every render, for lists that change while
    ComfyUI runs (files in models/iqa, installed priors, ComfyUI's schedulers)."""

    id: str
    type: str
    tooltip: str
    optional: bool = False
    default: Any = None
    min: Any = None
    max: Any = None
    step: Any = None
    options: Optional[Choices] = None
    multiline: bool = False
    #: Shown collapsed by front ends that support it; passed as an extra key (no ComfyUI version has an argument).
    advanced: bool = False

    def __post_init__(self):
        if (self.type == "COMBO") != (self.options is not None):
            raise ValueError(f"input '{self.id}': options are for COMBO inputs, and a COMBO needs them")
        if not self.type.isupper():
            raise ValueError(f"input '{self.id}': types are upper case ComfyUI type names, got {self.type!r}")

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES

    def choices(self) -> list:
        return list(self.options() if callable(self.options) else self.options)

    def extra(self) -> dict:
        """The options dict of the V1 rendering (only what is set, as the nodes always declared it)."""
        d = {k: getattr(self, k) for k in ("default", "min", "max", "step") if getattr(self, k) is not None}
        if self.multiline:
            d["multiline"] = True
        d["tooltip"] = self.tooltip
        if self.advanced:
            d["advanced"] = True
        return d


@dataclass(frozen=True)
class Output:
    type: str
    name: Optional[str] = None  # ComfyUI's V1 default: the type
    tooltip: Optional[str] = None

    @property
    def label(self) -> str:
        return self.name or self.type


@dataclass(frozen=True)
class Schema:
    node_id: str
    display_name: str
    description: str
    category: str
    inputs: Sequence[Input] = field(default_factory=tuple)
    outputs: Sequence[Output] = field(default_factory=tuple)
    is_output_node: bool = False

    def __post_init__(self):
        ids = [i.id for i in self.inputs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.node_id}: input ids repeat: {ids}")

    def ordered_inputs(self) -> list[Input]:
        """Required, then optional, each in declaration order: the order of sockets and widget values."""
        return [i for i in self.inputs if not i.optional] + [i for i in self.inputs if i.optional]

    def input(self, id: str) -> Input:
        return next(i for i in self.inputs if i.id == id)


def legacy_input_types(schema: Schema) -> dict:
    """The V1 ``INPUT_TYPES`` dict: ``{"required": {id: (type or [choices], options)}, "optional": {...}}``."""
    out: dict = {"required": {}}
    for i in schema.ordered_inputs():
        kind = i.choices() if i.type == "COMBO" else i.type
        out.setdefault("optional" if i.optional else "required", {})[i.id] = (kind, i.extra())
    return out


def check_choices(schema: Schema, inputs: dict) -> None:
    """Refuse a combo value outside its options, as ComfyUI does for V1 combos when a prompt is queued.

    ComfyUI 0.8.0 checks V3 combos too; 0.3.64 passes any value of a V3 combo to the node.
    """
    for i in schema.inputs:
        if i.type == "COMBO" and i.id in inputs:
            choices = i.choices()
            if inputs[i.id] not in choices:
                listed = ", ".join(map(str, choices)) if len(choices) <= 20 else f"a list of {len(choices)}"
                raise ValueError(f"{schema.display_name}: {i.id} {inputs[i.id]!r} is not one of: {listed}")


class Node:
    """Base of the plain node classes: V1 attributes derived from ``SCHEMA``; the logic in ``execute``.

    ``execute`` returns what a V1 node returns (a tuple, or ``{"ui": ..., "result": ...}``); nodes/v3.py
    wraps it for ComfyUI, tests and tools call it directly.
    """

    SCHEMA: Schema
    FUNCTION = "execute"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        s = cls.SCHEMA
        cls.CATEGORY, cls.DESCRIPTION, cls.OUTPUT_NODE = s.category, s.description, s.is_output_node
        cls.RETURN_TYPES = tuple(o.type for o in s.outputs)
        cls.RETURN_NAMES = tuple(o.label for o in s.outputs)
        cls.OUTPUT_TOOLTIPS = tuple(o.tooltip for o in s.outputs)

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802 (ComfyUI's name)
        return legacy_input_types(cls.SCHEMA)

    @classmethod
    def execute(cls, **inputs):
        raise NotImplementedError


# -- V3 (only called when ComfyUI loads the pack) -----------------------------------------------------

#: ComfyUI's built-in socket types; any other type (the pack's IQA_PRIOR, IQA_INVERSION) is ``io.Custom``.
_V3_TYPES = {"MODEL": "Model", "VAE": "Vae", "LATENT": "Latent", "IMAGE": "Image", "MASK": "Mask", "CLIP": "Clip",
             "CONDITIONING": "Conditioning", "UPSCALE_MODEL": "UpscaleModel", "INT": "Int", "FLOAT": "Float",
             "STRING": "String", "BOOLEAN": "Boolean"}
_custom: dict = {}


def _v3_type(io, name: str):
    if name in _V3_TYPES:
        return getattr(io, _V3_TYPES[name])
    if name not in _custom:
        _custom[name] = io.Custom(name)
    return _custom[name]


def _v3_input(io, i: Input):
    # Only arguments that ComfyUI 0.3.64 and 0.8.0 both take; unset ones (None) are left out of /object_info,
    # so it shows what legacy_input_types gives, combos aside ("COMBO" with "options" instead of a bare list).
    common = {"optional": i.optional, "tooltip": i.tooltip}
    if i.type == "COMBO":
        x = io.Combo.Input(i.id, options=i.choices(), default=i.default, **common)
    elif i.type in ("INT", "FLOAT"):
        x = _v3_type(io, i.type).Input(i.id, default=i.default, min=i.min, max=i.max, step=i.step, **common)
    elif i.type == "STRING":
        x = io.String.Input(i.id, multiline=True if i.multiline else None, default=i.default, **common)
    elif i.type == "BOOLEAN":
        x = io.Boolean.Input(i.id, default=i.default, **common)
    else:
        x = _v3_type(io, i.type).Input(i.id, **common)
    if i.advanced:  # 0.3.64's widget inputs take no extra_dict argument; every Input has the attribute
        x.extra_dict = {**x.extra_dict, "advanced": True}
    return x


def to_v3(schema: Schema):
    """``io.Schema`` of ``schema`` in the pinned node API (:func:`.v3.api`; call it inside ComfyUI only)."""
    from .v3 import api
    _, io, _ = api()

    taken = {i.id for i in schema.inputs}
    # An output id must not repeat an input id in 0.3.64 (IQA Fine-tune Upscaler's upscale_model is both);
    # front ends show display_name, so only the internal id changes.
    outputs = [_v3_type(io, o.type).Output(o.label if o.label not in taken else f"{o.label}_out",
                                            display_name=o.label, tooltip=o.tooltip) for o in schema.outputs]
    return io.Schema(node_id=schema.node_id, display_name=schema.display_name, category=schema.category,
                     description=schema.description, inputs=[_v3_input(io, i) for i in schema.ordered_inputs()],
                     outputs=outputs, is_output_node=schema.is_output_node)
