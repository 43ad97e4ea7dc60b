"""Runs a command-line tool (`effnetx-<tool> args...`) in the test process, as its console script runs it:
`main([argv0, *args])`, absl's parsing and all. Starting a Python process per case would cost seconds each.

Each tool defines its absl flags when its module is imported (`effnetx_jax.cli`), and several tools share
flag names (--workdir, --out, --config) with different meanings: so a tool's module is imported anew for
each run, after the flags of every `effnetx_jax.cli.*` module imported before (tools and the flag modules
they share, with the validators tools add to those) are removed, and every flag is reset to its default.
"""

import importlib
import sys

import pytest
from absl import flags


def tool_module(name: str):
    """`effnetx_jax.cli.<name>`, imported with its flags defined anew."""
    for module in [name for name in sys.modules if name.startswith("effnetx_jax.cli.")]:
        for flag in list(flags.FLAGS.flags_by_module_dict().get(module, [])):  # a copy: deleting edits it
            delattr(flags.FLAGS, flag.name)
        del sys.modules[module]
        # `from effnetx_jax.cli import weights_flags` would otherwise find the old module on the package.
        vars(sys.modules["effnetx_jax.cli"]).pop(module.rsplit(".", 1)[1], None)
    return importlib.import_module(f"effnetx_jax.cli.{name}")


def run_tool(name: str, *args: str):
    """The exit code of `effnetx-<name> args...`: None (success), or the `error: ...` line of a user's mistake."""
    module = tool_module(name)
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exited:
        module.main([f"effnetx-{name}", *args])
    return exited.value.code


def error_line(name: str, *args: str) -> str:
    """The line `effnetx-<name> args...` exits with on a user's mistake; fails unless it is one `error: ...` line."""
    message = str(run_tool(name, *args))
    assert message.startswith("error: ") and "\n" not in message, message
    return message
