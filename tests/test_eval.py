"""evaluate_checkpoint and eval.py on a tiny run of the trainer: the trainer's own evaluation reproduced from
its checkpoints, read-only, in one process and in two."""

import os
import pathlib
import re

import pytest

from effnetx_jax.train import evaluate_checkpoint

from conftest import free_port, read_jsonl, run_to_end, tiny_run_config, tiny_run_flags, tool_process

DIGITS_TEST_EXAMPLES = 359
PROCESS_TIMEOUT_S = 300


def _trainer_eval(workdir, step: int) -> dict:
    (line,) = [line for line in read_jsonl(workdir) if line["step"] == step and "eval/top1" in line]
    return line


def _expected(workdir, step: int, weights: str) -> dict:
    """What evaluate_checkpoint must return: the trainer's evaluation at `step` of those weights."""
    logged = _trainer_eval(workdir, step)
    prefix = "eval/ema_" if weights == "ema" else "eval/"
    return {
        "step": step,
        **{name: logged[prefix + name] for name in ("top1", "top5", "loss")},
        "num_examples": DIGITS_TEST_EXAMPLES,
        "skipped_images": 0,
    }


def _snapshot(directory) -> dict:
    """Every file under `directory` with its size and modification time."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in pathlib.Path(directory).rglob("*")
    }


@pytest.mark.parametrize(("step", "weights"), [(None, "ema"), (None, "raw"), (3, "ema")])
def test_a_checkpoint_evaluates_exactly_as_the_trainer_did_and_stays_untouched(data_dir, trained_run, step, weights):
    before = _snapshot(trained_run)
    result = evaluate_checkpoint(tiny_run_config(data_dir), str(trained_run), step=step, weights=weights)
    assert result == _expected(trained_run, step or 6, weights)
    assert _snapshot(trained_run) == before


def test_no_checkpoint_names_the_directory_and_creates_nothing(data_dir, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"no checkpoint in {tmp_path}/checkpoints: train.py writes them")
    ):
        evaluate_checkpoint(tiny_run_config(data_dir), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_missing_step_lists_the_available_ones(data_dir, trained_run):
    with pytest.raises(ValueError, match=r"no checkpoint at step 4 in .*/checkpoints; available steps: 3, 6$"):
        evaluate_checkpoint(tiny_run_config(data_dir), str(trained_run), step=4)


def test_a_checkpoint_of_another_model_is_refused_naming_the_parameter(data_dir, trained_run):
    other = tiny_run_config(data_dir)
    other.model.width = 0.5
    with pytest.raises(ValueError, match=r"written for another config: .*params/.* has shape"):
        evaluate_checkpoint(other, str(trained_run))


def test_unknown_weights_are_refused(data_dir, trained_run):
    with pytest.raises(ValueError, match=r"weights must be one of ema, raw, got 'best'"):
        evaluate_checkpoint(tiny_run_config(data_dir), str(trained_run), weights="best")


def _eval_py(data_dir, workdir, *flags):
    """eval.py with the flags of the tests' training run (run from the repository root)."""
    return tool_process("eval", *tiny_run_flags(data_dir, workdir), *flags)


PRINTED = re.compile(
    r"step (\d+) \(\w+ weights\) on digits test: top1=(\S+) top5=(\S+) loss=(\S+) examples=(\d+) skipped_images=(\d+)"
)


def _printed(stdout: str) -> dict:
    step, top1, top5, loss, examples, skipped = PRINTED.fullmatch(stdout.splitlines()[-1]).groups()
    return {
        "step": int(step),
        "top1": float(top1),
        "top5": float(top5),
        "loss": float(loss),
        "num_examples": int(examples),
        "skipped_images": int(skipped),
    }


@pytest.mark.slow
def test_eval_py_prints_the_trainers_numbers(data_dir, trained_run):
    before = _snapshot(trained_run)
    (stdout,) = run_to_end([_eval_py(data_dir, trained_run, "--weights=raw", "--step=3")], PROCESS_TIMEOUT_S)
    assert stdout.splitlines()[-1].startswith("step 3 (raw weights) on digits test: top1=")
    assert _printed(stdout) == pytest.approx(_expected(trained_run, 3, "raw"), rel=1e-5, abs=1e-4)
    assert _snapshot(trained_run) == before


@pytest.mark.slow
def test_two_processes_evaluate_every_example_once_with_the_same_numbers(data_dir, trained_run):
    port = free_port()
    processes = [
        _eval_py(
            data_dir,
            trained_run,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={process_id}",
        )
        for process_id in range(2)
    ]
    outputs = run_to_end(processes, PROCESS_TIMEOUT_S)
    # Each process reads half of the split; both print the metrics of the whole.
    for stdout in outputs:
        assert _printed(stdout) == pytest.approx(_expected(trained_run, 6, "ema"), rel=1e-5, abs=1e-4)
