"""Every subcommand's --help says what it does and shows an example command."""

from __future__ import annotations

import pytest

from geoseg.cli import EXAMPLES, build_parser


def _subcommands() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]  # argparse keeps them there
    return dict(action.choices)


def test_every_subcommand_has_an_example():
    assert set(_subcommands()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_help_has_a_description_and_an_example(name, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([name, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]  # after the usage block
    assert len(description.split()) >= 4 and not description.lstrip().startswith(("positional", "options"))
    assert f"example:\n  geoseg {name}" in text or f"example:\n  geoseg -q {name}" in text
    for line in EXAMPLES[name]:
        assert line in text
