"""The package as a user installs it: a wheel built from this checkout, installed into a fresh virtual
environment and used from an empty directory outside the checkout, through its console scripts.

The fresh environment sees the dependencies of this one through a path entry (a `.pth` line naming this
environment's site-packages): installing them again would take minutes and the same wheels. A path entry's
own `.pth` files are not processed, so this checkout's editable install stays invisible: `effnetx_jax`
comes only from the wheel. An audit hook in every process of the fresh environment fails any file opened
in the source tree (other than the dependencies, where this environment lives inside the checkout).
"""

import json
import pathlib
import re
import subprocess
import sys
import sysconfig
import venv

import numpy as np
import pytest

from effnetx_jax.models import create_model

from conftest import REPO, process_env
from test_convert import tf_training_checkpoint, write_config_file  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

PROCESS_TIMEOUT_S = 600

# Installed as a module of the fresh environment, imported by a `.pth` line at every start-up.
SOURCE_TREE_GUARD = """import os, sys

_REPO, _DEPENDENCIES = {repo!r}, {dependencies!r}


def _refuse_the_source_tree(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path.startswith(_REPO + os.sep) and not path.startswith(_DEPENDENCIES + os.sep):
            raise RuntimeError("opened a file of the source tree: " + path)


sys.addaudithook(_refuse_the_source_tree)
"""


def example_config() -> str:
    """The complete config file that docs/training.md shows (the block after `<!-- example: my_config.py -->`)."""
    page = (REPO / "docs" / "training.md").read_text()
    found = re.search(r"<!-- example: my_config\.py -->\n```python\n(.*?)```", page, re.DOTALL)
    assert found, "docs/training.md lost its example config"
    return found.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """The `bin/` folder of a fresh virtual environment holding the wheel of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", REPO],
        check=True,
        capture_output=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    (wheel,) = (root / "dist").glob("effnetx_jax-*.whl")
    venv.create(root / "env", with_pip=False)
    bin_dir = root / "env" / "bin"
    fresh = subprocess.run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    site = pathlib.Path(fresh.stdout.strip())
    dependencies = sysconfig.get_path("purelib")
    (site / "dependencies.pth").write_text(dependencies + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "-q", "--no-deps", wheel],
        check=True,
        capture_output=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    # After the install, which runs pip from this environment.
    guard = SOURCE_TREE_GUARD.format(repo=str(REPO.resolve()), dependencies=str(pathlib.Path(dependencies).resolve()))
    (site / "source_tree_guard.py").write_text(guard)
    (site / "source_tree_guard.pth").write_text("import source_tree_guard\n")
    return bin_dir


def run(bin_dir: pathlib.Path, cwd: pathlib.Path, *command: str, tfds_dir: pathlib.Path | None = None) -> str:
    """`command` (a console script of the fresh environment, or its python) in `cwd`; its stdout.
    `tfds_dir`: TFDS's default data dir (TFDS_DATA_DIR), so that the digits are not built again."""
    env = process_env()
    env.pop("PYTHONPATH", None)
    if tfds_dir is not None:
        env["TFDS_DATA_DIR"] = str(tfds_dir)
    result = subprocess.run(
        [bin_dir / command[0], *command[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"$ {' '.join(map(str, command))}\n{result.stdout}")  # pytest -rP shows what a user would see
    return result.stdout


def test_the_wheel_works_from_an_empty_directory(installed, tf_training_checkpoint, data_dir, tmp_path):  # noqa: F811
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    where = run(installed, empty, "python", "-c", "import effnetx_jax, sys; print(effnetx_jax.__file__)")
    assert str(installed.parent) in where and str(REPO) not in where
    decoder = run(installed, empty, "python", "-c", "from effnetx_jax.data import decode; print(decode.JPEG_DECODER)")
    assert "_jpeg_crop" in decoder  # the wheel built and holds the crop-only JPEG decoder
    missing = run(installed, empty, "python", "-c", "import importlib.util as u; print(u.find_spec('configs'))")
    assert missing.strip() == "None"  # the checkout's configs/ package is out of reach
    refused = subprocess.run(
        [installed / "python", "-c", f"open({str(REPO / 'README.md')!r})"], capture_output=True, text=True, check=False
    )
    assert "opened a file of the source tree" in refused.stderr  # the guard is on

    summary = run(installed, empty, "effnetx-summary", "efficientnet-x-b0")
    assert "params 7,584,104 (7.58M)   MACs 920,421,088 (0.920B)" in summary

    config, prefix, ema_values = tf_training_checkpoint
    converted = run(
        installed,
        empty,
        "effnetx-convert",
        "tf",
        str(prefix),
        f"--config={write_config_file(empty / 'tiny.py', config)}",
        "--out=converted",
    )
    assert converted.startswith("tiny: ")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.save(empty / "images.npy", images)
    load = (
        "import effnetx_jax, json, numpy as np\n"
        "model, variables = effnetx_jax.load('converted')\n"
        "print(json.dumps(np.asarray(model.apply(variables, np.load('images.npy'), train=False)).tolist()))\n"
    )
    logits = np.array(json.loads(run(installed, empty, "python", "-c", load)))
    expected = create_model(config.model).apply(ema_values, images, train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)

    (empty / "my_config.py").write_text(example_config())
    trained = run(installed, empty, "effnetx-train", "--config=my_config.py", "--workdir=runs/mine", tfds_dir=data_dir)
    assert trained.startswith("step 20: ") and "eval/top1=" in trained, trained
    assert (empty / "runs" / "mine" / "checkpoints" / "20").is_dir()
