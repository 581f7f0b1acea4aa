"""The search-method registry and `hwnas search --method M --help`."""

from __future__ import annotations

import pytest

from hwnas.cli.main import main
from hwnas.cli.search import SHARED_OPTIONS, _option_names, _params
from hwnas.errors import HwnasError
from hwnas.cli.methods.registry import get_method, method_names


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("name", method_names())
def test_each_method_help_lists_its_own_options_and_no_other_methods(capsys, name):
    code, output = run(capsys, "search", "--method", name, "--help")
    assert code == 0, output
    mine = _option_names(name)
    assert mine and all(opt in output for opt in mine)
    others = set().union(*(_option_names(m) for m in method_names() if m != name)) - mine
    assert others, "methods should differ in their options"
    listed = {o.strip(",") for line in output.splitlines() if line.startswith("  -")
              for o in line.split()[:3] if o.startswith("-")}
    assert not listed & others, listed & others


def test_an_option_of_another_method_is_refused_by_name(capsys, tmp_path):
    code, output = run(capsys, "search", "--method", "tfnas", "--true-latency", "--target", "1", "--out", str(tmp_path))
    assert code == 2
    assert "--true-latency is an option of --method unas, not tfnas" in output


def test_an_unknown_method_names_the_closest():
    with pytest.raises(HwnasError, match="did you mean 'unas'"):
        get_method("unaz")


def test_every_method_option_has_help():
    for name in method_names():
        for p in _params(SHARED_OPTIONS) + _params(get_method(name).options):
            assert p.help, f"{name}: {p.opts} has no help"
