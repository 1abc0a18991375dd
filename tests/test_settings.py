"""The settings records are the one source: the CLI options and node inputs come from them, validation reads them.

Every record in ``core.options.RECORDS`` is checked on both surfaces: each field is an option of every command
the record names and an input of the node it names, or it says why it is library-only there."""
import dataclasses
import importlib
import typing

import pytest

from iqa_map.cli import options, parser
from iqa_map.core.map import settings as S
from iqa_map.core.options import RECORDS

for _module in ("map", "quality", "sr"):  # each module declaring records fills RECORDS when imported
    importlib.import_module(f"iqa_map.core.{_module}.settings")

FIELDS = [(cls, f, opt) for cls in RECORDS for f, opt in S.options(cls)]
IDS = [f"{cls.__name__}.{f.name}" for cls, f, _ in FIELDS]
ON_CLI = [(cls, f, opt, cmd) for cls, f, opt in FIELDS for cmd in RECORDS[cls]]


def _actions(command: str) -> dict:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices[command]._actions}


def test_every_module_declaring_records_is_imported_here():
    assert {c.__name__ for c in RECORDS} >= {"MapSettings", "TileSettings", "SelectSettings", "QualityMapSettings",
                                            "RegionalSettings", "SRSettings", "UpscaleSettings"}


@pytest.mark.parametrize("cls,f,opt,command", ON_CLI, ids=[f"{c.__name__}.{f.name}@{cmd}" for c, f, _, cmd in ON_CLI])
def test_every_field_is_on_its_commands_or_says_why_not(cls, f, opt, command):
    assert opt.group in options.titles_of(cls) and opt.help
    actions = _actions(command)
    flags = {s for a in actions.values() for s in a.option_strings}
    if opt.cli is None:
        assert f.name not in actions and opt.why, f"{f.name} is library-only on the CLI: say why"
        return
    if opt.group == "guard" and "--monitor" not in flags:  # no monitor prior on this command: no hack guard
        assert S.cli_flag(f, opt) not in flags
        return
    action = actions[f.name]
    assert S.cli_flag(f, opt) in action.option_strings
    if opt.choices and not opt.open_choices and opt.metavar is None:
        assert list(action.choices) == list(opt.choices)
    assert action.help and opt.help.split(";")[0][:30].replace("%", "%%") in action.help


@pytest.mark.parametrize("cls", [c for c in RECORDS if not RECORDS[c]], ids=lambda c: c.__name__)
def test_a_record_on_no_command_says_why_for_each_field(cls):
    for f, opt in S.options(cls):
        assert opt.cli is None and opt.why, f"{cls.__name__}.{f.name}: give it a flag or say why it has none"


@pytest.mark.parametrize("cls,f,opt", FIELDS, ids=IDS)
def test_defaults_and_choices_pass_their_own_validation(cls, f, opt):
    record = cls()
    record.validate()
    if opt.choices:
        assert f.default is None or f.default in opt.choices
    hint = typing.get_type_hints(cls)[f.name]
    if opt.unset is not None or f.default is None:
        assert type(None) in typing.get_args(hint), f"{f.name} can be unset, so it is Optional"


@pytest.mark.parametrize("cls,f,opt", [x for x in FIELDS if x[2].choices and not x[2].open_choices],
                         ids=[i for i, x in zip(IDS, FIELDS) if x[2].choices and not x[2].open_choices])
def test_a_value_outside_the_choices_is_refused_by_name(cls, f, opt):
    with pytest.raises(S.SettingsError, match=f.name) as e:
        cls(**{f.name: "no-such-choice"}).validate()
    assert e.value.field == f.name


@pytest.mark.parametrize("cls,f,opt", [x for x in FIELDS if x[2].range],
                         ids=[i for i, x in zip(IDS, FIELDS) if x[2].range])
def test_a_value_outside_the_range_is_refused_by_name(cls, f, opt):
    lo, hi = opt.range
    for bad in ([lo - 1] if lo is not None else []) + ([hi + 1] if hi is not None else []):
        with pytest.raises(S.SettingsError, match=f.name):
            cls(**{f.name: type(f.default or lo)(bad)}).validate()


def test_presets_are_data_over_the_fields():
    names = {f.name for f in dataclasses.fields(S.MapSettings)}
    assert set(S.PRESETS) == set(S.PRESET_HELP) and S.PRESETS["default"] == {}
    for name, values in S.PRESETS.items():
        assert set(values) <= names
        s = S.preset(name)
        s.validate()
        assert all(getattr(s, k) == v for k, v in values.items())


def _settings(*argv):
    args = parser().parse_args(["enhance", "x.png", "-o", "out", *argv])
    return options.map_settings(args), options.tile_settings(args)


def test_the_command_line_gives_the_library_defaults_unless_told_otherwise():
    assert _settings() == (S.MapSettings(), S.TileSettings())
    s, t = _settings("--preset", "fast", "--steps", "6", "--no-tied", "--fidelity", "mse:50", "--tile", "0")
    assert s == S.preset("fast", steps=6, tied=False, fidelity="mse", fidelity_weight=50.0)
    assert t == S.TileSettings(tile=0)
    assert _settings("--adaptive-fidelity")[0].adaptive_fidelity == "cnniqa-builtin"
    assert _settings("--adaptive-fidelity", "prior")[0].adaptive_fidelity == "prior"


@pytest.mark.parametrize("argv,flag", [(["--patience", "0"], "--patience"), (["--strength", "2"], "--strength"),
                                       (["--fidelity", "l7"], "--fidelity"), (["--tile", "32"], "--tile"),
                                       (["--fidelity", "mse:5", "--fidelity-weight", "6"], "disagree")])
def test_a_bad_setting_is_named_by_its_flag(argv, flag):
    with pytest.raises(ValueError, match=flag):
        _settings(*argv)


def _record(cls, command, *argv):
    return options.settings(parser().parse_args([command, *argv]), cls)


def test_rank_qmap_and_upscale_read_their_records_back():
    from iqa_map.core.quality.settings import QualityMapSettings, SelectSettings
    from iqa_map.core.sr.settings import UpscaleSettings

    # Saved scripts keep working: the flags and defaults these commands had before the records.
    assert _record(SelectSettings, "rank", "a.png", "b.png") == SelectSettings(temperature=5.0, tile=128, overlap=32)
    assert _record(SelectSettings, "rank", "a.png", "--mode", "softmax", "--temperature", "2", "--seed", "3",
                   "--tile", "64", "--overlap", "16") == SelectSettings("softmax", 2.0, 3, 64, 16)
    assert _record(QualityMapSettings, "qmap", "a.png", "-o", "m") == QualityMapSettings(48, 8, "minmax", False)
    assert _record(QualityMapSettings, "qmap", "a.png", "-o", "m", "--window", "32", "--stride", "4", "--normalise",
                   "absolute", "--invert") == QualityMapSettings(32, 4, "absolute", True)
    up = ["a.png", "--model", "m.pth", "-o", "o"]
    assert _record(UpscaleSettings, "upscale", *up) == UpscaleSettings(tile=512, overlap=32)
    assert _record(UpscaleSettings, "upscale", *up, "--tile", "0", "--tile-overlap", "8") == UpscaleSettings(0, 8)
    for command, cls, argv, flag in [("rank", SelectSettings, ["a.png", "--temperature", "0"], "--temperature"),
                                     ("qmap", QualityMapSettings, ["a.png", "-o", "m", "--window", "4"], "--window"),
                                     ("upscale", UpscaleSettings, [*up, "--tile", "16"], "--tile must be 0"),
                                     ("upscale", UpscaleSettings, [*up, "--tile-overlap", "-1"], "--tile-overlap")]:
        with pytest.raises(ValueError, match=flag):
            _record(cls, command, *argv)


def test_fusion_choices_are_the_librarys():
    from iqa_map.core.priors import FUSION_MODES

    for command in ("enhance", "rank", "sr-finetune"):
        assert list(_actions(command)["fusion"].choices) == list(FUSION_MODES)


def test_low_res_data_is_the_new_name_of_lr_data():
    argv = ["sr-finetune", "--model", "m.pth", "-o", "o.pth", "--data", "hr"]
    assert parser().parse_args([*argv, "--low-res-data", "lr"]).lr_data == "lr"
    assert parser().parse_args([*argv, "--lr-data", "lr"]).lr_data == "lr"  # the old name, in saved scripts
    assert parser().parse_args(argv).lr_data is None
    assert _actions("sr-finetune")["lr_data"].option_strings[0] == "--low-res-data"  # --help names the new one


@pytest.mark.parametrize("cls,f,opt", FIELDS, ids=IDS)
def test_every_field_is_a_node_input_or_says_why_not(cls, f, opt):
    from iqa_map.nodes import NODES

    if opt.node is None:
        assert opt.why, f"{f.name} is library-only on the nodes: say why"
        return
    key, name = opt.node
    spec = NODES[key].INPUT_TYPES()
    section = next(sec for sec in spec.values() if name in sec)
    kind, extra = section[name]
    default = opt.unset if f.default is None else f.default
    assert extra["default"] == default and extra.get("advanced", False) == opt.advanced
    assert opt.help[1:30] in extra["tooltip"]
    if opt.choices:
        assert [c for c in kind if c != opt.unset] == list(opt.choices)
    if opt.range:
        assert extra["max"] == opt.range[1] and extra["min"] <= opt.range[0]


@pytest.mark.parametrize("key", [S.INVERT, S.ASCENT])
def test_node_values_read_back_as_the_library_settings(key):
    from iqa_map.nodes import NODES
    from iqa_map.nodes.settings_inputs import settings_from_inputs

    spec = NODES[key].INPUT_TYPES()
    mine = {opt.node[1] for _, opt in S.options(S.MapSettings) if opt.node and opt.node[0] == key}
    defaults = {n: extra["default"] for sec in spec.values() for n, (_, extra) in sec.items() if n in mine}
    assert mine == set(defaults)
    with pytest.raises(TypeError, match="no input scheduler"):
        settings_from_inputs(key, {**defaults, "scheduler": "karras"})  # a node's own inputs are not settings
    assert settings_from_inputs(key, defaults) == S.MapSettings()  # every unset widget value means None
    if key == S.ASCENT:
        s = settings_from_inputs(key, {**defaults, "learning_rate": 0.5, "patience": 3, "adaptive_fidelity": "niqe"})
        assert (s.lr, s.patience, s.adaptive_fidelity) == (0.5, 3, "niqe")
        with pytest.raises(ValueError, match="^learning_rate must be between"):
            settings_from_inputs(key, {**defaults, "learning_rate": 1000.0})
