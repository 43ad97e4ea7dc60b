"""Every command line reports a user's mistake as one `error: ...` line and a non-zero exit, without a
traceback unless asked; bugs keep theirs."""

import os
import pathlib
import subprocess
import sys

import pytest

from effnetx_jax import cli
from effnetx_jax.errors import UserError

from command_line import error_line, run_tool

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_a_missing_or_unparsable_config_file_is_named_with_its_line(tmp_path):
    with pytest.raises(UserError, match=r"--config=nope\.py: config file 'nope\.py' does not exist"):
        cli.check_config_file("nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return dict(\n\ndef oops(:\n")
    with pytest.raises(UserError, match=rf"--config={broken}:arg: {broken} line \d+: "):
        cli.check_config_file(f"{broken}:arg")


def test_an_unknown_override_names_the_nearest_key_at_its_level():
    argv = ["--config=configs/quickstart.py", "--config.data.mixup_alfa=0.2"]
    assert cli._unknown_override(argv, ("config",)) == (
        "--config.data.mixup_alfa: --config.data has no key 'mixup_alfa'; did you mean --config.data.mixup_alpha?"
    )
    message = cli._unknown_override(["--config", "configs/quickstart.py", "--config.zzz=1"], ("config",))
    assert message.startswith("--config.zzz: --config has no key 'zzz'; its keys: ")
    assert cli._unknown_override(["--config=configs/quickstart.py", "--config.seed=1"], ("config",)) is None


def test_user_mistakes_become_one_line_and_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit, match=r"^error: config\.batch_size: too big; halve it$"), cli.one_line_errors():
        raise UserError("config.batch_size: too big\nhalve it")
    with pytest.raises(SystemExit, match=r"^error: \[Errno 2\] No such file"), cli.one_line_errors():
        pathlib.Path("/no/such/file").read_text()
    with pytest.raises(UserError), cli.one_line_errors(show_traceback=True):
        raise UserError("shown with its traceback")
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(UserError), cli.one_line_errors():
        raise UserError("shown with its traceback")
    with pytest.raises(ZeroDivisionError), cli.one_line_errors():
        1 / 0  # noqa: B018 (a bug, not the user's mistake)


@pytest.mark.parametrize("tool", ["summary", "bench"])
def test_summary_and_bench_name_an_unknown_model_in_one_line(tool, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    message = error_line(tool, "efficientnet-x-b9")
    assert message.startswith("error: unknown model 'efficientnet-x-b9'; registered models: ")
    with pytest.raises(UserError):
        run_tool(tool, "efficientnet-x-b9", "--traceback")


def _command(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != cli.TRACEBACK_ENV} | (env_extra or {})
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, check=False)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_a_missing_config_file_is_reported_before_jax_is_imported():
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['train.py', '--config=nope.py', '--workdir=unused']\n"
        "try:\n    runpy.run_path('train.py', run_name='__main__')\n"
        "finally:\n    print('jax imported' if 'jax' in sys.modules else 'jax not imported')\n"
    )
    result = _command("-c", probe)
    assert _one_error_line(result) == "error: --config=nope.py: config file 'nope.py' does not exist"
    assert result.stdout.strip() == "jax not imported"
    # --traceback (or EFFNETX_TRACEBACK=1) shows where it came from.
    shown = _command("train.py", "--config=nope.py", "--workdir=unused", "--traceback")
    assert shown.returncode == 1 and "Traceback" in shown.stderr
    shown = _command("train.py", "--config=nope.py", "--workdir=unused", env_extra={cli.TRACEBACK_ENV: "1"})
    assert shown.returncode == 1 and "Traceback" in shown.stderr


def test_the_command_lines_print_one_error_line(tmp_path, copy_of_trained_run, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    monkeypatch.chdir(REPO)
    assert error_line("train", "--config=configs/quickstart.py", "--config.lerning_rate=0.1", "--workdir=unused") == (
        "error: --config.lerning_rate: --config has no key 'lerning_rate'; did you mean --config.learning_rate?"
    )
    stray = error_line("train", "--config=configs/quickstart.py", "--workdir=unused", "extra", "words")
    assert stray == "error: unexpected arguments: extra words"
    bad_value = error_line("train", "--config=configs/quickstart.py", "--config.seed=abc", "--workdir=unused")
    assert bad_value.startswith("error: flag --config.seed=abc: ")

    (tmp_path / "a_file").write_text("")
    assert error_line("eval", f"--workdir={tmp_path / 'a_file'}").startswith(
        f"error: {tmp_path / 'a_file'} holds no weights"
    )
    (copy_of_trained_run / "checkpoints" / "6" / "_CHECKPOINT_METADATA").unlink()
    assert error_line("eval", f"--workdir={copy_of_trained_run}", "--step=6") == (
        f"error: the checkpoint at step 6 in {copy_of_trained_run / 'checkpoints'} is damaged: "
        "_CHECKPOINT_METADATA is missing"
    )
    broken = tmp_path / "sweep.py"
    broken.write_text("def get_config(:\n")
    assert error_line("lacs", f"--config={broken}", f"--workdir={tmp_path}") == (
        f"error: --config={broken}: {broken} line 1: invalid syntax"
    )
    with pytest.raises(FileNotFoundError):  # --traceback: the exception itself
        run_tool("eval", f"--workdir={tmp_path / 'a_file'}", "--traceback")


@pytest.mark.slow
def test_every_console_script_lists_its_flags_without_importing_jax_or_tensorflow():
    from importlib.metadata import entry_points

    scripts = [
        script.name for script in entry_points(group="console_scripts") if script.value.startswith("effnetx_jax")
    ]
    tools = ["train", "eval", "summary", "bench", "convert", "predict", "export", "lacs", "search"]
    assert sorted(scripts) == sorted(f"effnetx-{tool}" for tool in [*tools, "data-bench", "data-preview"])
    probe = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(script,) = entry_points(group='console_scripts', name=sys.argv[1])\n"
        "try:\n    script.load()([sys.argv[1], '--help'])\n"
        "except SystemExit as exited:\n    assert exited.code == 0, exited.code\n"
        "print('heavy:', sorted(name for name in ('jax', 'tensorflow') if name in sys.modules))\n"
    )
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", probe, name], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name in scripts
    }
    helps = {}
    for name, process in processes.items():
        helps[name], stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
        assert helps[name].startswith(f"`{name}") and "  --[no]traceback:" in helps[name], helps[name][:500]
        assert helps[name].rstrip().endswith("heavy: []"), (name, helps[name][-300:])
    # Each lists its own flags and those it shares with other tools.
    for name, flag in [
        ("effnetx-train", "--workdir"),
        ("effnetx-train", "--coordinator_address"),
        ("effnetx-eval", "--weights"),
        ("effnetx-summary", "--batch"),
        ("effnetx-bench", "--family"),
        ("effnetx-export", "--step"),
        ("effnetx-lacs", "--storage"),
        ("effnetx-search", "--num_processes"),
    ]:
        assert f"  {flag}:" in helps[name], (name, flag)
