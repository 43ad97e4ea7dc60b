"""Runs the `main(argv)` of a command line whose flags are absl's (convert, predict, export) in the test
process, as `python -m TOOL` runs it: with its flags set, inside the `cli.one_line_errors` that `cli.run`
puts around `main`. Starting a Python process per case would cost seconds each."""

import contextlib

import pytest
from absl import flags
from absl.testing import flagsaver

from effnetx_jax import cli


@contextlib.contextmanager
def tool_flags(**values):
    """The absl flags `values` set as a command line would set them (the tool's `define_flags()` must have
    run), restored on exit."""
    flags.FLAGS.mark_as_parsed()  # as cli.run leaves them after parsing; unset flags keep their defaults
    with flagsaver.flagsaver(**values):
        yield


def error_line(main, argv, **values) -> str:
    """The line `python -m TOOL` exits with on a user's mistake in `main(argv)` under flags `values`;
    fails unless it is one `error: ...` line."""
    with tool_flags(**values), pytest.raises(SystemExit) as exited, cli.one_line_errors():
        main(argv)
    message = str(exited.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message
