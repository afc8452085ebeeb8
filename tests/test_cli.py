"""CLI: option parsing and how errors are reported (no run is started here)."""

import pytest

from cvdd.cli import _parser, main
from cvdd.utils import CvddError


@pytest.mark.parametrize(
    "argv, debug",
    [
        (["--debug", "run"], True),
        (["run", "--debug"], True),
        (["run"], False),
        (["--debug", "presets"], True),
        (["presets", "--debug"], True),
        (["--debug", "resume", "some/run"], True),
        (["resume", "some/run", "--debug"], True),
        (["list-models"], False),
    ],
)
def test_debug_is_read_before_or_after_the_subcommand(argv, debug):
    assert getattr(_parser().parse_args(argv), "debug", False) is debug


@pytest.mark.parametrize(
    "argv", [["--debug", "run", "--preset", "nope"], ["run", "--preset", "nope", "--debug"]]
)
def test_debug_shows_the_exception(argv):
    with pytest.raises(CvddError, match="unknown preset"):
        main(argv)


def test_without_debug_an_error_is_one_line_and_exit_code_2(capsys):
    assert main(["run", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown preset 'nope'") and "Traceback" not in err


@pytest.mark.parametrize("argv", [["presets"], ["--debug", "presets"], ["presets", "--debug"]])
def test_presets_lists_every_preset_with_a_note(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "cifar10_ipc10" in out and "paper defaults" in out
    assert "spec" not in out  # users have no spec document: notes say what the values are
