"""predict and export on tiny converted checkpoints (random weights, 32 px): predict's probabilities are the
model's on the input pipeline's evaluation view, and the exported artifacts compute the model's logits
for any batch size."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags
from PIL import Image

from effnetx_jax import weights
from effnetx_jax.data import preprocessing
from effnetx_jax.errors import UserError
from effnetx_jax.models import create_model
from effnetx_jax.recipe import get_config
from effnetx_jax.weights import export, predict

from command_line import error_line, run_tool, tool_module
from conftest import PLUMBING_BLOCKS, REPO, process_env, run_to_end, tool_process

PROCESS_TIMEOUT_S = 300


def tiny_trainer_config(num_classes: int, dataset: str):
    config = get_config()
    config.model.update(
        blocks=PLUMBING_BLOCKS,
        width=0.25,
        depth=1.0,
        resolution=32,
        head_filters=64,
        num_classes=num_classes,
        dtype="float32",
    )
    config.dataset = dataset
    return config


@pytest.fixture(scope="module")
def variables():
    """Initialised weights of the 10-class tiny model, with logits spread so that the ranking is clear."""
    model = create_model(tiny_trainer_config(10, "digits").model)
    images = np.zeros((1, 32, 32, 3), np.float32)
    # unsafe_rbg: the initialisers compile in half the time of the default threefry keys.
    variables = jax.jit(lambda x: model.init({"params": jax.random.key(0, impl="unsafe_rbg")}, x))(images)
    variables = jax.device_get(variables)
    # A fresh model's probabilities are all ~10%, ranked by rounding: larger logits make the ranks meaningful.
    variables["params"]["classifier"]["kernel"] = variables["params"]["classifier"]["kernel"] * 50
    return variables


@pytest.fixture(scope="module")
def checkpoint(variables, tmp_path_factory):
    """A converted checkpoint of the 10-class model, trained (as its config says) on digits."""
    directory = str(tmp_path_factory.mktemp("tiny") / "weights")
    report = {"source": "random initialisation", "format": "test"}
    weights.save_converted(directory, tiny_trainer_config(10, "digits"), variables, report)
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    """Two photographs (427x640 JPEGs, decoded at a reduced DCT scale) and an 8x8 grey digit as a PNG."""
    import sklearn.datasets

    from effnetx_jax.data.preview import sample_photos

    folder = tmp_path_factory.mktemp("images")
    digit = Image.fromarray(np.uint8(sklearn.datasets.load_digits().images[0] * 255 / 16))
    digit.save(folder / "digit.png")
    return [*sample_photos(), str(folder / "digit.png")]


@pytest.fixture(scope="module")
def random_pixels() -> np.ndarray:
    """Three float32 images at the resolution, pixels in 0..255: inputs of the exported artifacts."""
    return np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(checkpoint, images, random_pixels) -> dict:
    """`model.apply` on inputs normalised here: softmax on the input pipeline's evaluation view of `images`
    ("probabilities") and logits of `random_pixels` ("logits"), as one batch compiled once."""
    config = weights.read_config(checkpoint)
    view = preprocessing.eval_view(config)
    views = np.stack([view.image({"image": pathlib.Path(path).read_bytes()}) for path in images])
    pixels = np.concatenate([views.astype(np.float32), random_pixels])
    normalised = (pixels - np.float32(config.data.mean)) / np.float32(config.data.std)
    model, variables = weights.load(checkpoint)
    logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, normalised))
    return {"probabilities": np.asarray(jax.nn.softmax(logits[: len(images)])), "logits": logits[len(images) :]}


def test_predict_gives_the_models_top_classes_on_the_evaluation_view(checkpoint, images, reference):
    predictions = predict.predict(checkpoint, images, top_k=4)
    assert [prediction.path for prediction in predictions] == images
    for prediction, row in zip(predictions, reference["probabilities"], strict=True):
        probabilities = [guess.probability for guess in prediction.top]
        assert [guess.index for guess in prediction.top] == list(np.argsort(-row)[:4])
        np.testing.assert_allclose(probabilities, np.sort(row)[::-1][:4], rtol=1e-5)
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        # digits' TFDS labels are "0".."9": nothing beyond the index.
        assert [guess.name for guess in prediction.top] == [f"class {guess.index}" for guess in prediction.top]


def test_a_1000_class_model_names_imagenet_classes(variables, images, tmp_path):
    imagenet_variables = jax.tree.map(np.copy, variables)
    head_inputs = variables["params"]["classifier"]["kernel"].shape[0]
    imagenet_variables["params"]["classifier"] = {
        "kernel": np.random.default_rng(0).normal(size=(head_inputs, 1000)).astype(np.float32),
        "bias": np.zeros(1000, np.float32),
    }
    config = tiny_trainer_config(1000, "imagenet2012")
    weights.save_converted(str(tmp_path), config, imagenet_variables, {"source": "random", "format": "test"})
    (prediction,) = predict.predict(str(tmp_path), images[:1], top_k=3)
    names = predict.class_names(config)
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert [guess.name for guess in prediction.top] == [names[guess.index] for guess in prediction.top]


@pytest.mark.parametrize(
    ("dataset", "num_classes", "first_names"),
    [
        ("cats_vs_dogs", 2, ["cat", "dog"]),  # names in the builder's metadata, no data on this machine
        ("imagenette", 10, ["tench", "English springer"]),  # ImageNet WordNet IDs shown as words
        ("imagenet2012", 1000, ["tench", "goldfish"]),
        ("digits", 1000, ["tench", "goldfish"]),  # a 1000-class model whose dataset names no classes
        ("cats_vs_dogs", 3, ["class 0", "class 1"]),  # the dataset's names do not fit the model
        ("folder:/nowhere", 5, ["class 0", "class 1"]),
        ("no_such_dataset", 4, ["class 0", "class 1"]),
    ],
)
def test_class_names(dataset, num_classes, first_names):
    names = predict.class_names(tiny_trainer_config(num_classes, dataset))
    assert len(names) == num_classes and names[: len(first_names)] == first_names


# A Python file that a weights folder may carry: running it would leave a file behind.
SIDE_EFFECT = """
import pathlib
pathlib.Path(__file__).with_name("executed").write_text("this file was run")

def get_config():
    raise RuntimeError("this file was run")
"""


def test_loading_weights_executes_nothing_in_the_folder(checkpoint, images, reference, tmp_path):
    folder = pathlib.Path(shutil.copytree(checkpoint, tmp_path / "downloaded"))
    for name in ("config.py", "__init__.py", "variables.py"):
        (folder / name).write_text(SIDE_EFFECT)
    _, variables = weights.load(str(folder))
    jax.tree.map(np.testing.assert_array_equal, variables, weights.load(checkpoint)[1])
    (prediction,) = predict.predict(str(folder), images[:1], top_k=1)
    assert prediction.top[0].index == int(np.argmax(reference["probabilities"][0]))
    export.export_stablehlo(str(folder), str(tmp_path / "export"))
    assert not (folder / "executed").exists()


def test_a_folder_converted_before_config_json_is_refused_without_running_it(checkpoint, images, tmp_path):
    folder = pathlib.Path(shutil.copytree(checkpoint, tmp_path / "old"))
    (folder / "config.json").unlink()
    (folder / "config.py").write_text(SIDE_EFFECT)
    source = json.loads((folder / "conversion.json").read_text())["source"]
    for read in (weights.load, weights.read_config, lambda path: predict.predict(path, images[:1])):
        with pytest.raises(ValueError, match="converted by an earlier effnetx_jax") as refused:
            read(str(folder))
        assert f"effnetx-convert test {source} --model=NAME --out=NEW_DIR" in str(refused.value)
    assert not (folder / "executed").exists()


@pytest.mark.slow
def test_predict_command_line(checkpoint, images, reference):
    (stdout,) = run_to_end(
        [tool_process("effnetx_jax.cli.predict", f"--workdir={checkpoint}", "--top_k=2", *images[1:])],
        PROCESS_TIMEOUT_S,
    )
    lines = stdout.splitlines()
    assert lines[0::3] == images[1:]
    for row, ranked in zip(reference["probabilities"][1:], (lines[1:3], lines[4:6]), strict=True):
        for rank, (line, index) in enumerate(zip(ranked, np.argsort(-row)[:2], strict=True), start=1):
            assert line == f"  {rank}. class {index} ({index})  {100 * row[index]:.2f}%"


def test_predict_names_a_file_it_cannot_read_or_decode(checkpoint, images, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(predict.ImageError, match=re.escape(missing) + ": cannot read the file"):
        predict.predict(checkpoint, [images[0], missing])
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(pathlib.Path(images[2]).read_bytes()[:20])
    with pytest.raises(predict.ImageError, match=re.escape(str(truncated)) + ": not a readable image"):
        predict.predict(checkpoint, [str(truncated)])
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        predict.predict(str(tmp_path / "no_weights"), images)


@pytest.fixture(scope="module")
def stablehlo_export(checkpoint, tmp_path_factory) -> pathlib.Path:
    """A folder holding a StableHLO export of `checkpoint` (read only: copy it to change it)."""
    out = tmp_path_factory.mktemp("stablehlo") / "export"
    export.export_stablehlo(checkpoint, str(out))
    return out


def test_stablehlo_export_computes_the_logits_for_any_batch_size(stablehlo_export, random_pixels, reference):
    model_path, signature_path = (str(stablehlo_export / name) for name in (export.EXPORT_FILE, export.SIGNATURE_FILE))
    with open(model_path, "rb") as file:
        exported = jax.export.deserialize(bytearray(file.read()))
    assert exported.platforms == export.DEFAULT_PLATFORMS
    for batch in (1, 3):
        logits = np.asarray(exported.call(random_pixels[:batch]))
        assert logits.shape == (batch, 10) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, reference["logits"][:batch], atol=1e-5, rtol=1e-5)
    with open(signature_path) as file:
        signature = json.load(file)
    assert signature["inputs"]["images"] == {"shape": ["batch", 32, 32, 3], "dtype": "float32"}
    assert signature["outputs"]["logits"]["shape"] == ["batch", 10]
    assert signature["preprocessing"]["mean"] == list(get_config().data.mean)
    assert signature["class_names"] == [f"class {index}" for index in range(10)]
    assert signature["files"] == [export.EXPORT_FILE]


def test_an_export_into_an_export_is_refused_before_the_weights_are_read(stablehlo_export, tmp_path):
    # The weights folder does not exist: a check made after reading it would say so instead.
    message = error_line("export", f"--workdir={tmp_path / 'no_weights'}", f"--out={stablehlo_export}")
    assert message == (
        f"error: {stablehlo_export} already holds an export (signature.json); pass --overwrite (overwrite=True) to "
        "replace it, or choose another --out"
    )


@pytest.mark.parametrize(("export_format", "name"), [("stablehlo", "model.jax_export"), ("savedmodel", "variables")])
def test_an_export_never_writes_over_files_it_did_not_write(checkpoint, tmp_path, export_format, name):
    (tmp_path / name).write_text("the user's")
    message = error_line(
        "export", f"--workdir={checkpoint}", f"--out={tmp_path}", f"--format={export_format}", "--overwrite"
    )
    assert message == (
        f"error: {tmp_path} holds {name}, which the {export_format} export would write over, but no export of "
        "effnetx_jax lists it as its own; remove it yourself or choose another --out"
    )
    assert (tmp_path / name).read_text() == "the user's"


def test_overwrite_replaces_the_files_of_the_earlier_export_only(checkpoint, stablehlo_export, tmp_path, capsys):
    out = pathlib.Path(shutil.copytree(stablehlo_export, tmp_path / "export"))
    (out / "README.txt").write_text("the user's")
    signature = json.loads((out / export.SIGNATURE_FILE).read_text())
    # An earlier export's file that the new one does not write again: it goes.
    (out / "stale.bin").write_bytes(b"old")
    (out / export.SIGNATURE_FILE).write_text(json.dumps({**signature, "files": [*signature["files"], "stale.bin"]}))
    assert run_tool("export", f"--workdir={checkpoint}", f"--out={out}", "--overwrite") is None
    assert sorted(os.listdir(out)) == ["README.txt", export.EXPORT_FILE, export.SIGNATURE_FILE]
    assert f"  {out / export.EXPORT_FILE}  " in capsys.readouterr().out
    assert json.loads((out / export.SIGNATURE_FILE).read_text())["files"] == [export.EXPORT_FILE]


def test_an_export_that_lists_files_outside_its_folder_is_refused(stablehlo_export, checkpoint, tmp_path):
    out = pathlib.Path(shutil.copytree(stablehlo_export, tmp_path / "export"))
    (tmp_path / "precious").write_text("not the export's")
    signature = json.loads((out / export.SIGNATURE_FILE).read_text())
    (out / export.SIGNATURE_FILE).write_text(json.dumps({**signature, "files": ["../precious"]}))
    with pytest.raises(UserError, match=r"lists '../precious', which is not a path inside .*; nothing was removed"):
        export.export_stablehlo(checkpoint, str(out), overwrite=True)
    assert (tmp_path / "precious").exists()


@pytest.fixture(params=["empty", "missing"])
def incomplete_checkpoint(checkpoint, tmp_path, request) -> tuple[pathlib.Path, str]:
    """A copy of `checkpoint` whose variables/ is empty or missing, and the words that say which."""
    folder = pathlib.Path(shutil.copytree(checkpoint, tmp_path / "weights"))
    shutil.rmtree(folder / weights.VARIABLES_DIR)
    if request.param == "empty":
        (folder / weights.VARIABLES_DIR).mkdir()
        return folder, "has an empty variables/"
    return folder, "has no variables/"


def test_an_incomplete_converted_checkpoint_is_one_error_naming_the_folder(incomplete_checkpoint, images, tmp_path):
    from effnetx_jax.train import evaluate_checkpoint

    folder, problem = incomplete_checkpoint
    expected = f"{folder} is an incomplete converted checkpoint: it {problem} (the weights; "
    reads = {
        "load": lambda: weights.load(str(folder)),
        "predict": lambda: predict.predict(str(folder), images[:1]),
        "eval": lambda: evaluate_checkpoint(weights.read_config(str(folder)), str(folder)),
        "export": lambda: export.export_stablehlo(str(folder), str(tmp_path / "export")),
    }
    for name, read in reads.items():
        with pytest.raises(UserError) as refused:
            read()
        assert str(refused.value).startswith(expected), name
    for tool, args in [("predict", [images[0]]), ("export", [f"--out={tmp_path / 'export'}"])]:
        assert error_line(tool, f"--workdir={folder}", *args).startswith(f"error: {expected}")
    assert not (tmp_path / "export").exists()


@pytest.mark.slow
def test_savedmodel_export_from_the_command_line_serves_the_logits(checkpoint, random_pixels, reference, tmp_path):
    import tensorflow as tf

    out = str(tmp_path / "savedmodel")
    (stdout,) = run_to_end(
        [tool_process("effnetx_jax.cli.export", f"--workdir={checkpoint}", f"--out={out}", "--format=savedmodel")],
        PROCESS_TIMEOUT_S,
    )
    assert f"  {os.path.join(out, 'saved_model.pb')}  " in stdout
    serve = tf.saved_model.load(out).signatures["serving_default"]
    logits = serve(images=tf.constant(random_pixels[:2]))["logits"].numpy()
    np.testing.assert_allclose(logits, reference["logits"][:2], atol=1e-4, rtol=1e-4)
    with open(os.path.join(out, "signature.json")) as file:
        assert json.load(file)["signature"] == "serving_default"

    # A StableHLO export over it removes every file and folder the SavedModel export wrote, and only those.
    (tmp_path / "savedmodel" / "notes.txt").write_text("the user's")
    export.export_stablehlo(checkpoint, out, overwrite=True)
    assert sorted(os.listdir(out)) == [export.EXPORT_FILE, "notes.txt", export.SIGNATURE_FILE]


@pytest.mark.slow
def test_eval_py_on_an_incomplete_converted_checkpoint_is_one_error_line(checkpoint, tmp_path):
    folder = pathlib.Path(shutil.copytree(checkpoint, tmp_path / "weights"))
    shutil.rmtree(folder / weights.VARIABLES_DIR)
    result = subprocess.run(
        [sys.executable, "eval.py", f"--workdir={folder}"],
        cwd=REPO,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {folder} is an incomplete converted checkpoint: it has no variables/")
    assert "Traceback" not in result.stderr


def test_the_command_line_offers_the_formats_and_platforms_of_the_library():
    tool = tool_module("export")
    assert flags.FLAGS[tool._FORMAT.name].parser.enum_values == list(export.EXPORTERS)
    assert tuple(tool._PLATFORMS.default) == export.DEFAULT_PLATFORMS
