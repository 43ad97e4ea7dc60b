"""The command-line tools, one module each (`effnetx-<tool>`, or `python -m effnetx_jax.cli.<tool>`), and what
they share: how flags are defined, how they run, and how a user's mistake is reported.

One way of defining flags: absl flags at the top of the tool's module (`flags.DEFINE_*`, and
`config_flags.DEFINE_config_file` for config files), flags several tools share in one module
(`distributed_flags`, `weights_flags`, `study_flags`) whose key flags the tool adopts, positional
arguments read from `argv[1:]`. The tool's `main(argv=None)` is its console script: `run(_main, argv)`.

The entry-point rule: a tool's module imports only absl, ml_collections and light modules at the top,
and JAX, the trainer and everything heavy inside `_main`. Grain starts its worker processes with the
spawn method, which re-imports the entry point (and reads its absl flags) in every worker: a heavy
import at the top would cost each worker seconds and memory. It also keeps `--help` free of JAX.
This module follows the rule itself.

A user's mistake is an `errors.UserError` (config key, block string, dataset, flag) or an `OSError`
(missing path, workdir that is a file, read-only directory): the message already names the problem,
so it is one `error: ...` line and exit status 1, where a traceback would only bury it. Every other
exception is a bug and keeps its traceback. `--traceback` (or `EFFNETX_TRACEBACK=1`) shows the traceback
of a user's mistake too. Config files (`--config=path.py[:arg]`) are checked before anything else: a
missing file or a syntax error is reported before JAX is imported.

Host memory: a tool run as a program (its console script, `python -m`, `python train.py`) restarts itself
with mimalloc as its malloc where the steps run on the CPU, once its settings and config files have been
checked (`effnetx_jax.host_memory`); a tool called from Python with its arguments (the tests' `run_tool`)
does not.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence

import ml_collections
from absl import app, flags

from effnetx_jax import config_files, cpu_codegen, host_memory
from effnetx_jax.errors import UserError, root_cause

TRACEBACK_ENV = "EFFNETX_TRACEBACK"
_TRACEBACK_HELP = f"Show the traceback of an error in the input too (or set {TRACEBACK_ENV}=1)."
_TRACEBACK = flags.DEFINE_bool("traceback", False, _TRACEBACK_HELP)
USER_MISTAKES = (UserError, OSError)


def one_line(error: BaseException | str) -> str:
    """`error`'s message on one line (multi-line messages are joined with '; ')."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line) or type(error).__name__


@contextlib.contextmanager
def one_line_errors(show_traceback: bool = False) -> Iterator[None]:
    """Turns a user's mistake raised inside into `SystemExit('error: ...')`, unless tracebacks are asked for."""
    try:
        yield
    except USER_MISTAKES as error:
        if show_traceback or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        raise SystemExit(f"error: {one_line(error)}") from None


def check_config_file(spec: str, flag: str = "--config") -> None:
    """Raises `UserError` if the config file of `spec` (`path.py` or `path.py:arg`) is missing or does not
    parse; compiles it without running it."""
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        raise UserError(f"{flag}={spec}: config file {path!r} does not exist")
    try:
        with open(path, "rb") as file:
            compile(file.read(), path, "exec")
    except SyntaxError as error:
        raise UserError(f"{flag}={spec}: {path} line {error.lineno}: {error.msg}") from None


def _config_file_arguments(argv: Sequence[str], names: Sequence[str]) -> Iterator[tuple[str, str]]:
    for index, arg in enumerate(argv):
        for name in names:
            if arg.startswith(f"--{name}="):
                yield f"--{name}", arg.split("=", 1)[1]
            elif arg == f"--{name}" and index + 1 < len(argv):
                yield f"--{name}", argv[index + 1]


def config_value(holder: flags.FlagHolder):
    """The value of a `config_flags` flag; a failure to load its file (which config_flags defers until
    now) becomes a `UserError` naming the flag."""
    try:
        return holder.value
    except Exception as error:  # the user's config file failed; its own exception says how
        raise UserError(f"--{holder.name}: {one_line(root_cause(error))}") from error


def _unknown_override(argv: Sequence[str], flag_names: Sequence[str]) -> str | None:
    """For the first `--NAME.KEY=` override whose key its config lacks: the message naming the nearest key."""
    specs = dict(_config_file_arguments(argv, flag_names))
    for arg in argv:
        name, _, dotted = arg[2:].partition("=")[0].partition(".")
        if not (arg.startswith("--") and dotted and f"--{name}" in specs):
            continue
        section, path = config_files.load_config(specs[f"--{name}"]), []
        for key in dotted.split("."):
            if not isinstance(section, ml_collections.ConfigDict) or key not in section:
                keys = list(section) if isinstance(section, ml_collections.ConfigDict) else []
                nearest = difflib.get_close_matches(key, keys, n=1)
                where = ".".join([f"--{name}", *path])
                hint = (
                    f"; did you mean {'.'.join([where, nearest[0]])}?" if nearest else f"; its keys: {', '.join(keys)}"
                )
                return f"--{name}.{dotted}: {where} has no key {key!r}{hint}"
            section, path = section[key], [*path, key]
    return None


def _parse_flags(argv: list[str], config_flags: Sequence[str]) -> list[str]:
    """absl's flag parsing, with its errors and those of config overrides (which config_flags applies
    while parsing) as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # a bad flag value, a missing required flag, a config file that failed
        if "--traceback" in argv:
            raise
        message = str(error)
        if "Traceback (most recent call last)" in message:  # keep the flag and the exception's own line
            lines = [line.strip() for line in message.splitlines() if line.strip()]
            message = f"{lines[0]} {lines[-1]}"
        raise SystemExit(f"error: {one_line(message)}") from None
    except Exception as error:  # a --config.KEY override the config cannot take
        if "--traceback" in argv:
            raise
        message = _unknown_override(argv[1:], config_flags) or one_line(root_cause(error))
        raise SystemExit(f"error: {message}") from None


def refuse_arguments(argv: Sequence[str]) -> None:
    """Raises `UserError` if a tool that takes only flags was given positional arguments (`argv[1:]`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")


_HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")


def _help(main: Callable) -> str:
    """The tool's docstring and its flags (its own, those it adopts, and --traceback). absl's own --help
    describes the program's `__main__` module, which for a console script is pip's wrapper."""
    module = sys.modules[main.__module__]
    # absl files the flags of a module run as `python -m` under its path (sys.argv[0]).
    defined_under = sys.argv[0] if main.__module__ == "__main__" else main.__module__
    flag_help = "\n".join(flags.FLAGS.module_help(name) for name in (defined_under, __name__))
    return f"{(module.__doc__ or '').strip()}\n\nflags:\n{flag_help}"


def _import_from_working_directory() -> None:
    """Lets config files import modules from the directory the tool runs in (`from configs import quickstart`
    in the repository's experiments), as `python -m effnetx_jax.cli.<tool>` and `python train.py` do there; a
    console script's own path holds only its bin directory. Appended, so nothing there shadows an installed
    module."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def run(
    main: Callable[[list[str]], object], argv: Sequence[str] | None = None, config_flags: Sequence[str] = ("config",)
) -> None:
    """Runs a tool: `absl.app.run(main)` on `argv` (default: `sys.argv`), where `config_flags` names the tool's
    `config_flags.DEFINE_config_file` flags. Their files are checked first, a user's mistake while parsing or
    in `main` is one line, and `--help` lists the tool's flags. Exits, as `app.run` does."""
    is_program = argv is None  # the program's own command line, not a call from Python (the tests' run_tool)
    argv = list(sys.argv if argv is None else argv)
    if any(arg in _HELP_FLAGS for arg in argv[1:]):
        print(_help(main))
        raise SystemExit(0)
    with one_line_errors("--traceback" in argv):
        # A bad EFFNETX_CPU_* or EFFNETX_ALLOCATOR setting is refused before any work.
        cpu_codegen.check_settings()
        host_memory.check_settings()
        for flag, spec in _config_file_arguments(argv[1:], config_flags):
            check_config_file(spec, flag)
    host_memory.set_up(restart=is_program)  # a program starts again with mimalloc, where it applies
    _import_from_working_directory()

    def guarded(args):
        with one_line_errors(_TRACEBACK.value):
            return main(args)

    # config_flags finds `--config.KEY` overrides in sys.argv, and a study records its command line from it.
    program_argv, sys.argv = sys.argv, argv
    try:
        app.run(guarded, argv=argv, flags_parser=functools.partial(_parse_flags, config_flags=config_flags))
    finally:
        sys.argv = program_argv
