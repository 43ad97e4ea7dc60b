"""Importing weights: official TF names (reference §7), TF1 checkpoints written with TensorFlow and timm
safetensors files converted and compared tensor by tensor and logit by logit, refusals that name the
mismatch, and the variant preprocessing a converted checkpoint carries."""

import json
import re
import struct

import jax
import numpy as np
import pytest

from effnetx_jax import recipe, weights
from effnetx_jax.errors import UserError
from effnetx_jax.models import create_model, model_config
from effnetx_jax.weights import convert
from effnetx_jax.weights.convert import tf_checkpoint, timm_weights
from effnetx_jax.weights.convert.layout import model_layers

from command_line import error_line, run_tool
from conftest import EVERY_BLOCK, init_variables, tiny_config, tiny_run_config

EMA = "/ExponentialMovingAverage"


def tf_names(model: str) -> dict:
    cfg = model_config(model)
    names = tf_checkpoint.tf_names(model_layers(cfg), model)
    return {"/".join(key): name for key, name in names.items()}


def test_tf_names_of_efficientnet_b0_follow_the_reference():
    names = tf_names("efficientnet-b0")
    assert len(names) == 311  # the reference graph's global variables
    s = "efficientnet-b0/"
    # Expansion 1: depthwise first, so the projection is the block's first conv2d.
    assert names["params/blocks_0/depthwise/kernel"] == s + "blocks_0/depthwise_conv2d/depthwise_kernel"
    assert names["params/blocks_0/depthwise_bn/scale"] == s + "blocks_0/tpu_batch_normalization/gamma"
    assert names["params/blocks_0/se/reduce/kernel"] == s + "blocks_0/se/conv2d/kernel"
    assert names["params/blocks_0/se/expand/bias"] == s + "blocks_0/se/conv2d_1/bias"
    assert names["params/blocks_0/project_conv/kernel"] == s + "blocks_0/conv2d/kernel"
    assert names["batch_stats/blocks_0/project_bn/var"] == s + "blocks_0/tpu_batch_normalization_1/moving_variance"
    # Expansion 6: expand conv2d, BN, depthwise, BN_1, SE, project conv2d_1, BN_2.
    assert names["params/blocks_1/expand_conv/kernel"] == s + "blocks_1/conv2d/kernel"
    assert names["params/blocks_1/expand_bn/bias"] == s + "blocks_1/tpu_batch_normalization/beta"
    assert names["batch_stats/blocks_1/depthwise_bn/mean"] == s + "blocks_1/tpu_batch_normalization_1/moving_mean"
    assert names["params/blocks_1/project_conv/kernel"] == s + "blocks_1/conv2d_1/kernel"
    assert names["params/blocks_1/project_bn/scale"] == s + "blocks_1/tpu_batch_normalization_2/gamma"
    assert names["params/stem_conv/kernel"] == s + "stem/conv2d/kernel"
    assert names["batch_stats/stem_bn/mean"] == s + "stem/tpu_batch_normalization/moving_mean"
    assert names["params/head_conv/kernel"] == s + "head/conv2d/kernel"
    assert names["params/head_bn/scale"] == s + "head/tpu_batch_normalization/gamma"
    assert names["params/classifier/kernel"] == s + "head/dense/kernel"
    assert names["params/classifier/bias"] == s + "head/dense/bias"
    assert names["params/blocks_15/project_conv/kernel"] == s + "blocks_15/conv2d_1/kernel"


def test_tf_names_of_efficientnet_x_b0_follow_the_reference():
    names = tf_names("efficientnet-x-b0")
    assert len(names) == 296
    s = "efficientnet-x-b0/"
    # The space-to-depth conv has its own scope; the block's other layers count from zero.
    assert names["params/blocks_0/space2depth_conv/kernel"] == s + "blocks_0/space2depth/conv2d/kernel"
    assert names["batch_stats/blocks_0/space2depth_bn/mean"] == (
        s + "blocks_0/space2depth/tpu_batch_normalization/moving_mean"
    )
    assert names["params/blocks_0/depthwise/kernel"] == s + "blocks_0/depthwise_conv2d/depthwise_kernel"
    assert names["params/blocks_0/depthwise_bn/scale"] == s + "blocks_0/tpu_batch_normalization/gamma"
    assert names["params/blocks_0/project_conv/kernel"] == s + "blocks_0/conv2d/kernel"
    assert names["params/blocks_0/project_bn/scale"] == s + "blocks_0/tpu_batch_normalization_1/gamma"
    # Fused: the k x k conv, BN, SE, project conv2d_1, BN_1.
    assert names["params/blocks_1/fused_conv/kernel"] == s + "blocks_1/conv2d/kernel"
    assert names["params/blocks_1/fused_bn/scale"] == s + "blocks_1/tpu_batch_normalization/gamma"
    assert names["params/blocks_1/se/reduce/kernel"] == s + "blocks_1/se/conv2d/kernel"
    assert names["params/blocks_1/project_conv/kernel"] == s + "blocks_1/conv2d_1/kernel"
    assert names["params/blocks_1/project_bn/bias"] == s + "blocks_1/tpu_batch_normalization_1/beta"


def tiny_trainer_config(data_dir, blocks=EVERY_BLOCK, **model_overrides):
    """A trainer config (digits, 32 px) around a tiny model with every block type."""
    config = tiny_run_config(data_dir)
    model = tiny_config(blocks, **model_overrides)
    config.model = model
    return config


def random_variables(model_cfg, seed=0) -> dict:
    """Initialised variables with BatchNorm values moved away from 0 and 1, so mix-ups show."""
    variables = jax.tree.map(np.asarray, init_variables(create_model(model_cfg)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: (leaf + rng.normal(0, 0.1, leaf.shape)).astype(np.float32), variables)


def write_tf1_checkpoint(prefix, tensors: dict[str, np.ndarray]) -> None:
    """A TF1 checkpoint (tf.compat.v1 Saver, as the reference's main.py writes) holding `tensors` by name."""
    import tensorflow as tf

    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.Variable(value) for name, value in tensors.items()}
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix))


def tf_layout(key: tuple, value: np.ndarray) -> np.ndarray:
    """A Flax variable in TF's layout: only depthwise kernels differ ([kh, kw, 1, C] -> [kh, kw, C, 1])."""
    return value.transpose(0, 1, 3, 2) if key[-2] == "depthwise" else value


def flat(variables) -> dict:
    return {tuple(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}


def training_checkpoint(prefix, model_cfg, ema_values: dict, scope: str) -> None:
    """What the reference's main.py saves: raw variables, their EMA shadows, RMSProp slots, global_step."""
    names = tf_checkpoint.tf_names(model_layers(model_cfg), scope)
    rng = np.random.default_rng(1)
    tensors = {"global_step": np.int64(1234)}
    for key, name in names.items():
        value = tf_layout(key, flat(ema_values)[key])
        tensors[name] = rng.normal(size=value.shape).astype(np.float32)  # the raw weights: not wanted
        tensors[name + EMA] = value
        if key[0] == "params":
            tensors[name + "/RMSProp"] = np.ones_like(value)
            tensors[name + "/RMSProp_1"] = np.zeros_like(value)
    write_tf1_checkpoint(prefix, tensors)


@pytest.fixture(scope="module")
def tf_training_checkpoint(tmp_path_factory, data_dir):
    """A small TF1 training checkpoint of a model with every block type, and the EMA values it holds."""
    config = tiny_trainer_config(data_dir)
    ema_values = random_variables(config.model)
    prefix = tmp_path_factory.mktemp("tf") / "model.ckpt"
    training_checkpoint(prefix, config.model, ema_values, scope="tiny")
    return config, prefix, ema_values


def write_config_file(path, config) -> str:
    from effnetx_jax import config_files

    path.write_text(config_files.render_config(config, "A test config."))
    return str(path)


def test_tf_training_checkpoint_round_trip_through_the_command_line(
    tf_training_checkpoint, tmp_path, monkeypatch, capsys
):
    config, prefix, ema_values = tf_training_checkpoint
    out = tmp_path / "converted"
    # From outside the repository, with a relative --out (tests/test_wheel.py runs it as its own process).
    monkeypatch.chdir(tmp_path)
    config_file = write_config_file(tmp_path / "config.py", config)
    assert run_tool("convert", "tf", str(prefix), f"--config={config_file}", "--out=converted") is None
    stdout = capsys.readouterr().out
    names = tf_checkpoint.tf_names(model_layers(config.model), "tiny")
    assert f"tiny: {len(names)} tensors" in stdout and f"({len(names)} of them EMA shadows)" in stdout

    # The EMA shadows were taken (not the raw weights), in Flax's layout; everything else was dropped.
    model, variables = weights.load("converted")
    loaded = flat(jax.tree.map(np.asarray, variables))
    assert loaded.keys() == flat(ema_values).keys()
    for key, value in flat(ema_values).items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=str(key))
    report = json.loads((out / weights.REPORT_FILE).read_text())
    assert report["ema_shadows_used"] == len(names)
    # global_step, the raw variable behind each shadow, two RMSProp slots per parameter.
    assert "global_step" in report["dropped"] and len(report["dropped"]) == 1 + len(names) + 2 * sum(
        key[0] == "params" for key in names
    )

    # Same logits as the model with the original variables.
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    expected = create_model(config.model).apply(ema_values, images, train=False)
    np.testing.assert_allclose(model.apply(variables, images, train=False), expected, rtol=1e-5, atol=1e-5)
    # The converted checkpoint is a complete config for eval.py, predict and export.
    assert weights.read_config(str(out)).model.to_dict() == config.model.to_dict()


def test_plain_tf_variables_are_used_when_there_are_no_ema_shadows(data_dir, tmp_path):
    config = tiny_trainer_config(data_dir)
    values = random_variables(config.model, seed=3)
    names = tf_checkpoint.tf_names(model_layers(config.model), "tiny")
    write_tf1_checkpoint(
        tmp_path / "model.ckpt", {name: tf_layout(key, flat(values)[key]) for key, name in names.items()}
    )
    _, variables, report = convert.convert("tf", str(tmp_path / "model.ckpt"), config)
    assert report["ema_shadows_used"] == 0 and report["dropped"] == []
    for key, value in flat(values).items():
        np.testing.assert_array_equal(flat(variables)[key], value)


def test_checkpoint_of_another_architecture_is_refused_naming_the_first_mismatch(tf_training_checkpoint, data_dir):
    _, prefix, _ = tf_training_checkpoint
    wider = tiny_trainer_config(data_dir, width=0.5)
    with pytest.raises(convert.ConversionError, match=r"tiny/stem/conv2d/kernel/ExponentialMovingAverage has shape "):
        convert.convert("tf", str(prefix), wider)
    try:
        convert.convert("tf", str(prefix), wider)
    except convert.ConversionError as error:
        assert "has shape [3, 3, 3, 8], but" in str(error) and "tiny needs [3, 3, 3, 16]" in str(error)


def test_missing_and_unexpected_tensors_are_listed(data_dir, tmp_path):
    config = tiny_trainer_config(data_dir)
    values = random_variables(config.model)
    names = tf_checkpoint.tf_names(model_layers(config.model), "tiny")
    tensors = {name: tf_layout(key, flat(values)[key]) for key, name in names.items()}
    del tensors["tiny/head/dense/bias"]
    tensors["tiny/head/extra/kernel"] = np.zeros((2, 2), np.float32)
    write_tf1_checkpoint(tmp_path / "model.ckpt", tensors)
    with pytest.raises(convert.ConversionError) as error:
        convert.convert("tf", str(tmp_path / "model.ckpt"), config)
    assert "1 tensors tiny needs are missing: tiny/head/dense/bias" in str(error.value)
    assert "1 tensors are not part of tiny: tiny/head/extra/kernel" in str(error.value)


def test_a_registered_variant_gets_its_preprocessing():
    b0 = convert.converted_config("efficientnet-b0", 1000)
    assert b0.model.resolution == 224 and b0.model.dtype == "float32"
    assert b0.data.eval_crop_fraction == pytest.approx(224 / 256) and b0.data.resize == "bicubic_tf1"
    assert tuple(b0.data.mean) == recipe.IMAGENET_MEAN and tuple(b0.data.std) == recipe.IMAGENET_STD
    b7 = convert.converted_config("efficientnet-b7", 1000, advprop=True)
    assert b7.model.resolution == 600 and b7.data.eval_crop_fraction == pytest.approx(600 / 632)
    # AdvProp: x * 2/255 - 1.
    pixels = np.array([0.0, 127.5, 255.0])
    np.testing.assert_allclose((pixels - b7.data.mean[0]) / b7.data.std[0], [-1, 0, 1])


# ------------------------------------------------------------------------------------------------
# timm
# ------------------------------------------------------------------------------------------------


def write_safetensors(path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format: an 8-byte little-endian header size, a JSON header, the raw arrays."""
    header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, value in tensors.items():
        data = np.ascontiguousarray(value).tobytes()
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}[value.dtype]
        header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def timm_tensors(values) -> dict[str, np.ndarray]:
    """A tiny EfficientNet's variables under timm's names and PyTorch layouts, written out by hand."""
    v = flat(values)
    conv = lambda key: v[key].transpose(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW, and [kh, kw, 1, C] -> [C, 1, kh, kw]

    def bn(prefix, flax_name):
        return {
            f"{prefix}.weight": v[("params", *flax_name, "scale")],
            f"{prefix}.bias": v[("params", *flax_name, "bias")],
            f"{prefix}.running_mean": v[("batch_stats", *flax_name, "mean")],
            f"{prefix}.running_var": v[("batch_stats", *flax_name, "var")],
            f"{prefix}.num_batches_tracked": np.array(7, np.int64),
        }

    def se(prefix, block):
        return {
            f"{prefix}.se.conv_reduce.weight": conv(("params", block, "se", "reduce", "kernel")),
            f"{prefix}.se.conv_reduce.bias": v["params", block, "se", "reduce", "bias"],
            f"{prefix}.se.conv_expand.weight": conv(("params", block, "se", "expand", "kernel")),
            f"{prefix}.se.conv_expand.bias": v["params", block, "se", "expand", "bias"],
        }

    tensors = {"conv_stem.weight": conv(("params", "stem_conv", "kernel")), **bn("bn1", ("stem_bn",))}
    # Stage 0: one depthwise-separable block; stage 1: two inverted residuals (see TIMM_BLOCKS).
    tensors.update(
        {
            "blocks.0.0.conv_dw.weight": conv(("params", "blocks_0", "depthwise", "kernel")),
            **bn("blocks.0.0.bn1", ("blocks_0", "depthwise_bn")),
            **se("blocks.0.0", "blocks_0"),
            "blocks.0.0.conv_pw.weight": conv(("params", "blocks_0", "project_conv", "kernel")),
            **bn("blocks.0.0.bn2", ("blocks_0", "project_bn")),
        }
    )
    for j, block in enumerate(("blocks_1", "blocks_2")):
        prefix = f"blocks.1.{j}"
        tensors.update(
            {
                f"{prefix}.conv_pw.weight": conv(("params", block, "expand_conv", "kernel")),
                **bn(f"{prefix}.bn1", (block, "expand_bn")),
                f"{prefix}.conv_dw.weight": conv(("params", block, "depthwise", "kernel")),
                **bn(f"{prefix}.bn2", (block, "depthwise_bn")),
                **se(prefix, block),
                f"{prefix}.conv_pwl.weight": conv(("params", block, "project_conv", "kernel")),
                **bn(f"{prefix}.bn3", (block, "project_bn")),
            }
        )
    tensors["conv_head.weight"] = conv(("params", "head_conv", "kernel"))
    tensors.update(bn("bn2", ("head_bn",)))
    tensors["classifier.weight"] = v["params", "classifier", "kernel"].T
    tensors["classifier.bias"] = v["params", "classifier", "bias"]
    return tensors


TIMM_BLOCKS = ("r1_k3_s11_e1_i32_o16_se0.25", "r2_k5_s22_e6_i16_o24_se0.25")


def test_timm_safetensors_round_trip_with_layout_transposes(data_dir, tmp_path):
    config = tiny_trainer_config(data_dir, blocks=TIMM_BLOCKS, activation="swish", se_coefficient=0.0)
    values = random_variables(config.model)
    write_safetensors(tmp_path / "model.safetensors", timm_tensors(values))
    _, variables, report = convert.convert("timm", str(tmp_path / "model.safetensors"), config)
    assert set(report["dropped"]) == {name for name in timm_tensors(values) if name.endswith("num_batches_tracked")}
    for key, value in flat(values).items():
        np.testing.assert_array_equal(flat(variables)[key], value, err_msg=str(key))


def test_timm_import_refuses_efficientnet_x_blocks_and_other_shapes(data_dir, tmp_path):
    config = tiny_trainer_config(data_dir, blocks=TIMM_BLOCKS, activation="swish", se_coefficient=0.0)
    write_safetensors(tmp_path / "model.safetensors", timm_tensors(random_variables(config.model)))
    with pytest.raises(ValueError, match=r"block 0 is a mbconv block with space-to-depth.*EfficientNet-X has no timm"):
        convert.convert("timm", str(tmp_path / "model.safetensors"), tiny_trainer_config(data_dir))
    wider = tiny_trainer_config(data_dir, blocks=TIMM_BLOCKS, activation="swish", se_coefficient=0.0, width=0.5)
    with pytest.raises(convert.ConversionError, match=re.escape("conv_stem.weight has shape [8, 3, 3, 3]")):
        convert.convert("timm", str(tmp_path / "model.safetensors"), wider)


def test_unreadable_sources_are_named(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x01")
    with pytest.raises(UserError, match=r"junk\.safetensors is not a valid safetensors file: it has 1 bytes"):
        convert.convert("timm", str(tmp_path / "junk.safetensors"), "efficientnet-b0")
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        convert.convert("timm", str(tmp_path / "missing.safetensors"), "efficientnet-b0")
    with pytest.raises(FileNotFoundError, match="cannot read a TF checkpoint"):
        convert.convert("tf", str(tmp_path / "nothing"), "efficientnet-b0")
    with pytest.raises(ValueError, match="unknown source kind 'onnx'"):
        convert.convert("onnx", "x", "efficientnet-b0")


def raw_safetensors(header: bytes, data: bytes = b"", header_length: int | None = None) -> bytes:
    """A safetensors file's bytes from a raw header: its u64 length (`header_length`, default the true one),
    the header, the data."""
    return struct.pack("<Q", len(header) if header_length is None else header_length) + header + data


def tensor_header(**entries) -> bytes:
    return json.dumps(entries).encode()


F32_4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
MALFORMED_SAFETENSORS = {
    "random bytes": (
        np.random.default_rng(0).bytes(64),
        r"its header length says [\d,]+ bytes, but only 56 follow it",
    ),
    "header length 2**60": (
        raw_safetensors(b"{}", header_length=2**60),
        r"its header length says 1,152,921,504,606,846,976 bytes, but only 2 follow it",
    ),
    "header a JSON list": (raw_safetensors(b"[1, 2]"), r"its header is a JSON list, not an object of tensor entries"),
    "header a JSON number": (raw_safetensors(b"42"), r"its header is a JSON int, not an object"),
    "header not JSON": (raw_safetensors(b"\xff\xfe{"), r"its header is not JSON"),
    "entry not an object": (raw_safetensors(tensor_header(w=3)), r"the entry of tensor 'w' is 3, not \{dtype"),
    "shape not a list": (
        raw_safetensors(tensor_header(w={**F32_4, "shape": "4"}), bytes(16)),
        r"tensor 'w' has shape '4', not a list of non-negative integers",
    ),
    "offsets past the end": (
        raw_safetensors(tensor_header(w=F32_4), bytes(8)),
        r"tensor 'w' has data_offsets \[0, 16\], outside the 8 bytes of data after the header",
    ),
    "bytes that do not fit the shape": (
        raw_safetensors(tensor_header(w={**F32_4, "shape": [3]}), bytes(16)),
        r"tensor 'w' of shape \[3\] and dtype F32 has 16 bytes of data",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_SAFETENSORS)
def test_a_malformed_safetensors_file_is_one_error_line_naming_the_file(case, tmp_path):
    contents, reason = MALFORMED_SAFETENSORS[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(contents)
    out = tmp_path / "out"
    message = error_line("convert", "timm", str(path), "--model=efficientnet-b0", f"--out={out}")
    assert re.match(rf"error: {re.escape(str(path))} is not a valid safetensors file: {reason}", message), message
    assert not out.exists()


def test_a_safetensors_file_of_empty_tensors_is_read(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(raw_safetensors(tensor_header(w={"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]})))
    reader = timm_weights.SafetensorsReader(str(path))
    assert reader.shapes == {"w": (0, 3)} and reader.read("w").shape == (0, 3)


def test_command_line_errors_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    message = error_line("convert", "tf", str(tmp_path / "nothing"), f"--out={out}", "--model=efficientnet-b0")
    assert message.startswith("error: cannot read a TF checkpoint at") and not out.exists()
    message = error_line("convert", "tf", str(tmp_path / "nothing"), f"--out={out}")
    assert (
        message
        == "error: flags model=None, config=None: Exactly one of (model, config) must have a value other than None."
    )
    assert not out.exists()
