"""docs/cli.md is generated from the command line's parser (tools/make_cli_docs.py): it cannot drift from it."""
import argparse
import importlib.util
from pathlib import Path

import pytest

from iqa_map.cli import parser

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("make_cli_docs", REPO / "tools" / "make_cli_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _commands() -> dict:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_docs_cli_md_is_what_the_tool_generates():
    assert (REPO / "docs" / "cli.md").read_text() == _tool().generate(), \
        "docs/cli.md is stale: run `python tools/make_cli_docs.py`"


@pytest.mark.parametrize("name", list(_commands()))
def test_every_option_of_every_command_is_documented_with_its_help(name):
    doc = (REPO / "docs" / "cli.md").read_text()
    section = doc.split(f"## `iqa-map {name}`\n", 1)[1].split("\n## ", 1)[0]
    p, tool = _commands()[name], _tool()
    for action in p._actions:
        assert action.help, f"iqa-map {name}: {action.option_strings or action.dest} has no help"
        if isinstance(action, argparse._HelpAction):
            assert all(s in doc for s in action.option_strings)
            continue
        for s in action.option_strings or [action.dest]:
            assert f"`{s}" in section or f", {s}" in section, f"iqa-map {name}: {s} is not in docs/cli.md"
        assert tool._help(action, p.prog)[:30] in section.replace("`", ""), f"iqa-map {name}: {s}'s help"
