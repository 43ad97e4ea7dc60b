"""The ONNX export run in ONNX Runtime against the JAX model: a tiny model with every block type, and
EfficientNet-B0 and X-B0 at full size (224 px), at batch 1 and 3 from one file; and the command line."""

import json
import sys

import jax
import numpy as np
import pytest

from effnetx_jax import weights
from effnetx_jax.errors import UserError
from effnetx_jax.models import block_string, create_model, model_config
from effnetx_jax.recipe import get_config
from effnetx_jax.train.steps import normalize
from effnetx_jax.weights import export
from effnetx_jax.weights import onnx as onnx_export

from command_line import error_line, run_tool
from conftest import EVERY_BLOCK, tiny_config

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # max |logit difference|
BATCH = 3


def trainer_config(model_cfg):
    config = get_config()
    config.model = model_cfg
    config.dataset = "digits"  # a bundled dataset: class names without downloading anything
    return config


def pixels(resolution: int, batch: int = BATCH) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (batch, resolution, resolution, 3)).astype(np.float32)


def calibrated_variables(config) -> dict:
    """Random kernels (of variance 1 / fan-in), BatchNorm scales and biases away from 1 and 0, and BatchNorm
    statistics that are the batch statistics of `pixels` through those layers: far from 0 and 1, so a folding
    mistake shows, yet the logits stay of order 1 (random statistics grow B0's logits to 1e4, where float32
    rounding alone exceeds the tolerance). With momentum 0, one training step's update is those statistics.
    Drawn with numpy: jitting the model's initialisers would compile for 8 s."""
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.update(bn_momentum=0.0, dropout=0.0, drop_path=0.0)
    model = create_model(model_cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), pixels(model_cfg.resolution, batch=1)))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "kernel":
            return rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape).astype(np.float32)
        return {"scale": 1, "bias": 0, "mean": 0, "var": 1}[name] + rng.normal(0, 0.2, shape).astype(np.float32)

    variables = jax.tree_util.tree_map_with_path(draw, shapes)
    images = normalize(pixels(model_cfg.resolution), config)

    def statistics(variables, images):
        return model.apply(variables, images, train=True, mutable=["batch_stats"])[1]["batch_stats"]

    return {"params": variables["params"], "batch_stats": jax.device_get(jax.jit(statistics)(variables, images))}


def jax_logits(model, variables, config, images) -> np.ndarray:
    """What the other formats' artifacts compute (`predict.pixel_logits`), in JAX."""
    return np.asarray(jax.jit(lambda v, x: model.apply(v, normalize(x, config), train=False))(variables, images))


def assert_runtime_matches_jax(proto, model, variables, config):
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    images = pixels(config.model.resolution)
    expected = jax_logits(model, variables, config, images)
    for batch in (1, BATCH):  # one file for every batch size
        (logits,) = session.run([export.OUTPUT_NAME], {export.INPUT_NAME: images[:batch]})
        assert logits.shape == (batch, config.model.num_classes) and logits.dtype == np.float32
        assert np.abs(logits - expected[:batch]).max() <= TOLERANCE


@pytest.mark.parametrize("activation", block_string.ACTIVATIONS)  # every activation a config may name
def test_every_block_type_gives_the_jax_logits(activation):
    config = trainer_config(tiny_config(EVERY_BLOCK, activation=activation))
    variables = calibrated_variables(config)
    model = create_model(config.model)
    assert_runtime_matches_jax(onnx_export.model_proto(model, variables, config), model, variables, config)


# Full size: the tests' compile time hardly depends on the resolution, and at 64 px batch statistics over 2x2
# maps make near-constant channels whose rounding error BatchNorm amplifies 10x.
@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-x-b0"])
def test_a_variant_at_full_size_gives_the_jax_logits(name):
    config = trainer_config(model_config(name))
    config.model.num_classes = 10  # fewer classifier weights; every other layer as the variant has it
    variables = calibrated_variables(config)
    model = create_model(config.model)
    proto = onnx_export.model_proto(model, variables, config)
    assert_runtime_matches_jax(proto, model, variables, config)
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert not {"BatchNormalization", "Pad"} & {node.op_type for node in proto.graph.node}
    # NCHW throughout: the one Transpose is the input's.
    assert [node.op_type for node in proto.graph.node].count("Transpose") == 1
    stem = next(node for node in convs if node.input[1] == "stem/weight")
    assert onnx.helper.get_attribute_value(next(a for a in stem.attribute if a.name == "pads")) == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A converted checkpoint of the tiny model with every block type (ReLU and swish blocks)."""
    config = trainer_config(tiny_config(EVERY_BLOCK))
    directory = str(tmp_path_factory.mktemp("onnx") / "weights")
    weights.save_converted(directory, config, calibrated_variables(config), {"source": "test", "format": "test"})
    return directory


def test_effnetx_export_format_onnx_writes_the_model_and_its_signature(checkpoint, tmp_path, capsys):
    out = tmp_path / "export"
    assert run_tool("export", f"--workdir={checkpoint}", f"--out={out}", "--format=onnx") is None
    assert "onnx export of" in capsys.readouterr().out
    signature = json.loads((out / export.SIGNATURE_FILE).read_text())
    assert signature["format"] == "onnx" and signature["file"] == export.ONNX_FILE
    assert signature["files"] == [export.ONNX_FILE] and "platforms" not in signature
    assert signature["inputs"][export.INPUT_NAME]["shape"] == ["batch", 32, 32, 3]
    config = weights.read_config(checkpoint)
    model, variables = weights.load(checkpoint)
    assert_runtime_matches_jax(onnx.load(str(out / export.ONNX_FILE)), model, variables, config)
    # A second export replaces it only with --overwrite.
    assert "already holds an export" in error_line("export", f"--workdir={checkpoint}", f"--out={out}", "--format=onnx")
    assert run_tool("export", f"--workdir={checkpoint}", f"--out={out}", "--format=onnx", "--overwrite") is None


def test_an_onnx_export_never_writes_over_a_model_onnx_it_did_not_write(checkpoint, tmp_path):
    (tmp_path / export.ONNX_FILE).write_bytes(b"someone's model")
    message = error_line("export", f"--workdir={checkpoint}", f"--out={tmp_path}", "--format=onnx", "--overwrite")
    assert f"holds {export.ONNX_FILE}, which the onnx export would write over" in message
    assert (tmp_path / export.ONNX_FILE).read_bytes() == b"someone's model"


def test_platforms_are_refused_for_onnx(checkpoint, tmp_path):
    message = error_line("export", f"--workdir={checkpoint}", f"--out={tmp_path}", "--format=onnx", "--platforms=cpu")
    assert "--platforms" in message and "ONNX Runtime" in message


def test_without_the_onnx_package_the_export_says_what_to_install(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(UserError, match=r"pip install 'effnetx_jax\[onnx\]'"):
        export.EXPORTERS["onnx"](checkpoint, str(tmp_path / "export"))
