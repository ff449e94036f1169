"""Every ``cryonet <verb>`` that a message or docstring tells the user to run is a real subcommand.

All string literals of the package are read with ast (f-strings joined, their fields as ``{}``), so that a
message such as "Rebuild the stack with `cryonet stack`" fails here when no ``stack`` subcommand exists. Options
written inside backticks after the verb (```cryonet features --like```) must exist on that subcommand too.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from cryonet.cli import build_parser

PACKAGE = Path(__file__).resolve().parents[1] / "cryonet"

#: "cryonet <word>" phrases where the word is a noun, not a subcommand ("not a cryonet checkpoint").
NOUNS = {"checkpoint", "dependency", "split", "normalisation"}

#: ``cryonet <word>`` anywhere in a string.
PHRASE = re.compile(r"\bcryonet ([a-z][a-z0-9_-]*)")
#: An invocation written as code: ```cryonet <verb> <arguments>```.
INVOCATION = re.compile(r"`cryonet ([a-z][a-z0-9_-]*)([^`]*)`")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal; an f-string is one text with ``{}`` for each field."""
    inside_fstrings: set[int] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                    inside_fstrings.add(id(value))
                else:
                    parts.append("{}")
            out.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            out.append((node.lineno, node.value))
    return out


def _package_strings() -> list[tuple[str, str]]:
    """(``file:line``, text) of every string literal in cryonet/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _strings(ast.parse(path.read_text(), filename=str(path))):
            found.append((f"{path.relative_to(PACKAGE.parent)}:{line}", text))
    return found


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


STRINGS = _package_strings()
SUBCOMMANDS = _subcommands()


def test_the_scan_sees_messages_and_docstrings():
    texts = "\n".join(text for _, text in STRINGS)
    assert "`cryonet align`" in texts  # a message
    assert "``cryonet align``" in texts  # a docstring
    assert "`cryonet features --like`" in texts  # an invocation with an option
    assert {"synth", "align", "features", "train"} <= set(SUBCOMMANDS)


def test_every_cryonet_verb_in_a_string_is_a_subcommand():
    wrong = [
        f"{where}: cryonet {word}"
        for where, text in STRINGS
        for word in PHRASE.findall(text)
        if word not in SUBCOMMANDS and word not in NOUNS
    ]
    assert not wrong, f"strings name subcommands that `cryonet --help` does not list: {wrong}"


def test_options_of_quoted_invocations_exist():
    wrong = []
    for where, text in STRINGS:
        for verb, rest in INVOCATION.findall(text):
            sub = SUBCOMMANDS.get(verb)
            if sub is None:
                continue  # reported by the test above
            for option in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest):
                if option not in sub._option_string_actions:
                    wrong.append(f"{where}: `cryonet {verb} ... {option}`")
    assert not wrong, f"options that the subcommand does not have: {wrong}"


@pytest.mark.parametrize("noun", sorted(NOUNS))
def test_noun_allow_list_is_used_and_never_a_subcommand(noun):
    assert noun not in SUBCOMMANDS
    assert any(noun in PHRASE.findall(text) for _, text in STRINGS), f"'cryonet {noun}' no longer occurs: drop it"
